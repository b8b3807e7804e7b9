"""Bounds on what an inventory repository can make the reconciler spend.

An inventory is input from whoever opens a pull request, and the reconcile loop reads it
unattended on every push. Every resource a repository can make ``validate``, ``plan`` or the
loop spend is bounded here, in one place, and each breach is a
:class:`~reconciler.model.problems.Problem` naming the file -- found before the file is read
(its size, from ``fstat`` or from git's tree), parsed (its bytes) or compiled (its tokens).
``docs/inventory.md`` ("Hostile input") lists them for operators.

The figures leave room for large fleets (10,000 servers of ``bench/inventory.py`` are 4.5 MB in
10,002 files and take 100 MB to validate) while keeping the worst a repository can do within
5 s and 300 MiB of address space (``tests/unit/test_inventory_hostile.py`` runs ``validate``
under that ``RLIMIT_AS`` on every hostile case).
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB

# Reading: checked before a byte of the file is read.
MAX_FILE_BYTES = 256 * KiB  # one YAML file or template
# All files together. Parsed YAML takes about 13 times its size in memory (measured on the
# bench's inventory), so this is what keeps a repository of dense files under the memory bound.
MAX_TOTAL_BYTES = 16 * MiB
MAX_ENTRIES = 20_000  # files and directories under servers/, templates/, inspection/, together
MAX_DIRECTORY_DEPTH = 16  # servers/a/b/... (a path of the inventory has at most this many /)

# Parsing.
MAX_YAML_DEPTH = 64  # nested mappings and sequences
# Mappings, lists and scalars of all YAML files together. Parsed data takes 150 (the bench's
# servers) to 350 bytes (dense one-key mappings) a node while a run holds it: this is what
# bounds a run's memory. 10,000 servers of bench/inventory.py have 380,000.
MAX_YAML_NODES = 500_000
MAX_PROBLEMS_PER_FILE = 50  # then one more line says how many were left out

# Templates (see reconciler/render/sandbox.py for how each is enforced).
MAX_TEMPLATE_TOKENS = 20_000  # Jinja tokens of all the inventory's templates together
MAX_RENDERED_BYTES = 256 * KiB  # one rendered file
MAX_WRITTEN_BYTES = 1 * MiB  # all output one render produces, macro and block buffers included
MAX_VALUE_SIZE = 1 * MiB  # characters or items in one value a template builds
MAX_OPERATION_SIZE = 16 * MiB  # the product of the sizes of one call's arguments
MAX_INT_BITS = 4096  # an integer a template computes
RENDER_SECONDS = 2.0  # one render of one template
# Checking an inventory's templates (every host, both purposes) stops after this long in all.
CHECK_SECONDS = 2.0
CHECK_SECONDS_PER_RENDER = 0.001


def size_text(size: int) -> str:
    """``262144`` -> ``256 KiB``; what the limit messages print."""
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MiB"
    if size >= KiB and size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size:,} bytes"


@dataclass(slots=True)
class Intake:
    """What one reading of a repository took so far. A reader asks before each step; a refusal
    is the message of the problem to report (naming the file is the reader's part). Once the
    entries or the total run out, ``stopped`` is set and the reader reads nothing more."""

    entries: int = 0
    total: int = 0
    stopped: bool = False

    def entry(self) -> str | None:
        """Count one directory entry; the message when there are too many."""
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            self.stopped = True
            return (f"more than {MAX_ENTRIES:,} files and directories in servers/, "
                    "templates/ and inspection/: the rest is not read")
        return None

    def file(self, size: int) -> str | None:
        """Admit a file of ``size`` bytes before reading it, or say why it is not read."""
        if size > MAX_FILE_BYTES:
            return f"file is {size:,} bytes, more than the limit of {size_text(MAX_FILE_BYTES)}"
        if self.total + size > MAX_TOTAL_BYTES:
            self.stopped = True
            return (f"the inventory's files together are over the limit of "
                    f"{size_text(MAX_TOTAL_BYTES)}: this file and the rest are not read")
        self.total += size
        return None
