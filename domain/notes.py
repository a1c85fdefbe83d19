"""Note types of the seed."""

from typing import Final, Literal, get_args

NoteType = Literal["general", "analysis", "remediation", "escalation", "handoff"]
NOTE_TYPES: Final[tuple[str, ...]] = get_args(NoteType)
