"""`python -m timoe`: the CLI through the interpreter, for jobs whose PATH lacks the `timoe` script."""

from timoe.cli import app

if __name__ == "__main__":
    app()
