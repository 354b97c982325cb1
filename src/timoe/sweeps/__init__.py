"""Parallel and distributed Optuna sweeps, each trial an MLflow child run.

storage:  where a study lives (journal file or SQLAlchemy URL) and how workers take turns
          creating trials, so a study ends with exactly the trials asked for.
tracking: one MLflow child run per trial, written from any process through the client API.
worker:   the trial loop every worker runs, in the driver's process or in its own.
launch:   local worker processes (`timoe sweep --worker`) started and watched by the driver.
"""
