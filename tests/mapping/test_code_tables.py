"""The code tables' identifiers are well formed: every SNOMED CT id passes its Verhoeff
check digit and every LOINC code its mod-10 check digit.

A failed check means the code cannot exist in the code system (SNOMED CT Technical
Implementation Guide, "Check-digit" section; LOINC Users' Guide, "Calculating Mod 10
check digits").  Three echo LOINC codes and two SNOMED ids of earlier versions of the
tables failed exactly this.
"""

from __future__ import annotations

import re

from cds.clinical_tables import condition_specs, feature_specs, nyha_answers

# Verhoeff (1969): multiplication and permutation tables of the dihedral group D5
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def verhoeff_ok(number: str) -> bool:
    c = 0
    for i, digit in enumerate(reversed(number)):
        c = _D[c][_P[i % 8][int(digit)]]
    return c == 0


def loinc_ok(code: str) -> bool:
    """Mod 10 (Luhn) over the digits, check digit included."""
    total = 0
    for i, ch in enumerate(reversed(code.replace("-", ""))):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_the_check_digit_functions_on_known_codes() -> None:
    assert verhoeff_ok("22298006") and verhoeff_ok("900000000000207008")  # MI; core module
    assert not verhoeff_ok("22298007") and not verhoeff_ok("427787006")
    assert loinc_ok("718-7") and loinc_ok("8480-6") and not loinc_ok("18154-2")


def test_every_snomed_id_in_the_tables_passes_its_check_digit() -> None:
    codes = [c for s in condition_specs() for c in s.snomed_codes]
    codes += [code for system, code in nyha_answers() if system == "http://snomed.info/sct"]
    assert len(codes) >= 25
    for code in codes:
        assert re.fullmatch(r"[1-9][0-9]{5,17}", code), code
        assert code[-3:-1] in ("00", "10"), f"{code}: not a concept id (partition)"
        assert verhoeff_ok(code), f"SNOMED CT {code}: the Verhoeff check digit fails"


def test_every_loinc_code_in_the_tables_passes_its_check_digit() -> None:
    codes = {code for s in feature_specs() for code, _, _ in s.conversions}
    codes |= {s.loinc for s in feature_specs()}
    assert len(codes) >= 60
    for code in sorted(codes):
        assert re.fullmatch(r"[0-9]{1,7}-[0-9]", code), code
        assert loinc_ok(code), f"LOINC {code}: the mod-10 check digit fails"
