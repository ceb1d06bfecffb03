"""What every migration does: run a SQL script, one statement at a time."""

from __future__ import annotations

from alembic import op


def run_script(script: str) -> None:
    """Runs the statements of `script` (separated by a semicolon at the end of a line) in order.

    asyncpg prepares each statement, and a prepared statement holds one command: a script cannot go as one execute.
    """
    for statement in script.split(";\n"):
        if statement.strip():
            op.execute(statement)
