"""docs/interfaces.md is what the tables say, and what it says agrees with the codec."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tcpdct import docgen, ports, records, regmap
from tcpdct.params import Params


def _committed():
    return docgen.default_path().read_text()


def test_interfaces_md_is_up_to_date():
    assert _committed() == docgen.render(), \
        "docs/interfaces.md is out of date: run `make docs` (python -m tcpdct.docgen)"


def test_check_mode_reports_a_stale_file(tmp_path):
    stale = tmp_path / "interfaces.md"
    stale.write_text(docgen.render().replace("| `seq` |", "| `sequence` |"))
    assert docgen.main(["--check", "-o", str(stale)]) == 1
    stale.write_text(docgen.render())
    assert docgen.main(["--check", "-o", str(stale)]) == 0


def _sections(text):
    """``{heading: lines}`` for every ``####`` section (one per opcode and event type)."""
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            current = line if line.startswith("#### ") else None
            if current:
                sections[current] = []
        elif current:
            sections[current].append(line)
    return sections


_ROW = re.compile(r"^\| `(\w+)` \| [\d:]+ \| (\d+) \| (\d+) \|$")


@pytest.mark.parametrize("cls, table, word", [
    (records.Command, records.COMMAND_FIELDS, "opcode"),
    (records.Event, records.EVENT_FIELDS, "event type"),
])
def test_documented_field_positions_match_the_codec(cls, table, word):
    sections = _sections(_committed())
    for code, fields in table.items():
        rows = [_ROW.match(line) for line in sections[f"#### {code.name} ({word} {int(code)})"]]
        documented = [(m[1], int(m[2]), int(m[3])) for m in rows if m]
        assert [name for name, _, _ in documented] == [name for name, _ in fields if name]
        for name, offset, width in documented:
            # A record with only this field set must have exactly the documented bits set.
            ones = (1 << width) - 1
            word_bits = cls(code, 0, **{name: ones}).pack()
            assert word_bits == int(code) | ones << offset, f"{code.name}.{name}"


def test_every_enumeration_member_has_a_meaning():
    for enum_cls in (records.Opcode, records.CmdStatus, records.EventType, records.LegacyReason,
                     records.DropReason):
        for member in enum_cls:
            assert docgen.meaning(member), f"{enum_cls.__name__}.{member.name} has no meaning"


def test_every_port_and_register_is_documented():
    text = _committed()
    for name, member in ports.top_ports(Params()).items():
        direction = "in" if member.flow.name == "In" else "out"
        assert re.search(rf"^\| `{name}` \| {direction} \| \d+ \|$", text, re.MULTILINE), name
    for reg in regmap.REGISTERS:
        assert f"| {reg.offset:#05x} | `{reg.name}` | {reg.access} |" in text, reg.name


def test_claims_map_names_existing_tests():
    """Every claim has a row, and every test ``docs/claims.md`` names exists."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "claims.md").read_text()
    rows = re.findall(r"^\| (\d+) \|", text, re.M)
    assert [int(row) for row in rows] == list(range(1, 29))
    current = None
    names = 0
    for match in re.finditer(r"`([\w/]*test_\w+\.py)?::(test_\w+)`", text):
        current = match.group(1) or current
        path = root / (current if current.startswith("tb/") else f"tb/cocotb/{current}")
        assert re.search(rf"def {match.group(2)}\b", path.read_text()), \
            f"docs/claims.md names {current}::{match.group(2)}, which does not exist"
        names += 1
    assert names > 28


def test_documented_mutant_applies_to_the_rtl(tmp_path):
    """docs/verification.md tells how to see the regression catch ``tb/mutants/*.patch``: each
    patch must still apply to the RTL, and change it (applied to a copy, not the tree)."""
    root = Path(__file__).resolve().parents[2]
    patches = sorted((root / "tb" / "mutants").glob("*.patch"))
    assert patches
    for patch in patches:
        assert f"tb/mutants/{patch.name}" in (root / "docs" / "verification.md").read_text()
        target, = re.findall(r"^\+\+\+ b/(\S+)$", patch.read_text(), re.M)
        copy = tmp_path / target
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / target, copy)
        subprocess.run(["git", "apply", str(patch)], cwd=tmp_path, check=True)
        assert copy.read_text() != (root / target).read_text()
