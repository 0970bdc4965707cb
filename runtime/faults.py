"""Machine faults: a bad program stops with the instruction index, its opcode and a reason.

`nncc-run` prints ``nncc-run: PROGRAM: fault at instruction N (OPCODE): reason`` and exits 3.
"""

from __future__ import annotations

EXIT_FAULT = 3


class MachineFault(Exception):
    """A program the machine cannot execute or a file it cannot load.

    `index` is the instruction's position in the program (0-based); `opcode` its mnemonic, or
    ``header``/``data`` for a corrupt part of a program file that is not an instruction.
    """

    def __init__(self, index: int, opcode: str, reason: str):
        super().__init__(f"fault at instruction {index} ({opcode}): {reason}")
        self.index = index
        self.opcode = opcode
        self.reason = reason
