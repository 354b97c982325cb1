"""Interaction quantification: exact PID, BATCH, multi-scale BATCH, temporal RUS, synthetic ground truth."""

from timoe.interactions.batch import BatchPID, batch_pid
from timoe.interactions.contexts import ContextSpec, fit_contexts, window_features
from timoe.interactions.discretize import Discretizer, discretize
from timoe.interactions.exact import (
    ExactPID,
    exact_pid,
    exact_pid_many,
    joint_counts,
    pad_joints,
    pid_from_samples,
)
from timoe.interactions.multiscale import LagSamples, multiscale_pid
from timoe.interactions.synthetic import SyntheticTask, make_process, population_joint, true_rus
from timoe.interactions.temporal import ScalarFeature, compute_temporal_rus

__all__ = [
    "BatchPID",
    "ContextSpec",
    "Discretizer",
    "ExactPID",
    "LagSamples",
    "ScalarFeature",
    "SyntheticTask",
    "batch_pid",
    "compute_temporal_rus",
    "discretize",
    "exact_pid",
    "exact_pid_many",
    "fit_contexts",
    "joint_counts",
    "make_process",
    "multiscale_pid",
    "pad_joints",
    "pid_from_samples",
    "population_joint",
    "true_rus",
    "window_features",
]
