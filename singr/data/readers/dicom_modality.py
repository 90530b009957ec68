"""Which DICOM series is which MR modality: the naming rule, and explicit mappings.

The rule (:func:`modality_of`) reads the SeriesDescription, else the ProtocolName, upper-cased,
with ``_ - . / \\ ( ) , :`` read as spaces:

1. A BraTS or nnU-Net name as the whole description (``t1c``, ``T2-FLAIR``, ``flair``, ...)
   is that modality (:func:`canonical_modality`).
2. Other kinds of MR image are never one of the four: diffusion (DWI, DTI, ADC, TRACE),
   susceptibility and T2* (SWI, SWAN, T2*, T2STAR), perfusion (PERF, DSC, DCE, ASL, CBF, CBV),
   angiography (MRA, TOF), localizers (LOC, LOCALIZER, SCOUT, SURVEY, 3-PLANE), proton density
   (PD), maps and subtractions (MAP, MAPPING, SUB, SUBTRACTION), calibration scans.
3. FLAIR or dark fluid (FLAIR, DARK FLUID, TIRM) is ``flair``, unless T1 is named as well: a
   T1-FLAIR (GE's ``AX T1 FLAIR``) is T1-weighted and goes to rule 5.
4. T2 (``T2``, ``T2W``, ``T2 TSE``, ``T2_FSE``; not T2* nor FLAIR) is ``t2``.
5. T1 (``T1``, ``T1W``, ``3DT1``, MPRAGE, MP2RAGE, SPGR, FSPGR, BRAVO) is ``t1ce`` with a
   contrast marker and ``t1`` with a native marker:
   contrast: POST, POSTCONTRAST, GD, GAD, GADO, GADOLINIUM, CE, C+, +C, +GD, KM, +KM,
   CONTRAST, ENHANCED, T1C, T1CE, T1GD, T1POST, and names of agents (GADOVIST, DOTAREM,
   MAGNEVIST, PROHANCE, MULTIHANCE, CLARISCAN);
   native: PRE, PRECONTRAST, NATIVE, NATIV, NON CONTRAST, WITHOUT (CONTRAST), W/O, NO
   CONTRAST, OHNE KM, -C.
   Markers of both kinds: ambiguous. No marker: ``t1ce`` when the series has a
   ContrastBolusAgent, else ``t1``. (Markers are read in the description and the protocol
   name together.)
6. Anything else, and T1 together with T2: not recognised (``None``).

A study usually holds more series than the four (localizers, DWI, SWI): series the rule does not
place are left out. Two series that the rule gives one modality, or a modality no series gets,
stop :func:`assign_series` with an error that lists every series, what the rule made of it, and
how to choose by hand (``--dicom-map t1ce=7 t1=3``: SeriesNumber, SeriesInstanceUID or the
exact SeriesDescription, per modality, either naming).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from ...errors import SingrInputError
from .base import MODALITIES, canonical_modality, modality_list

__all__ = ["modality_of", "classify_series", "assign_series", "parse_dicom_map"]

_OTHER = {"DWI", "DTI", "ADC", "EADC", "TRACE", "TRACEW", "DIFFUSION", "SWI", "SWAN", "T2*", "T2STAR", "STAR",
          "PERF", "PERFUSION", "DSC", "DCE", "ASL", "PWI", "CBF", "CBV", "MRA", "TOF", "ANGIO", "LOC", "LOCALIZER",
          "LOCALISER", "SCOUT", "SURVEY", "3PLANE", "PD", "PDW", "MAP", "MAPPING", "SUB", "SUBTRACTION",
          "CALIBRATION", "ASSET", "REFSCAN", "SENSE REF"}
_POST = {"POST", "POSTCONTRAST", "POSTCON", "POSTGD", "GD", "GAD", "GADO", "GADOLINIUM", "CE", "C+", "+C", "+GD",
         "KM", "+KM", "CONTRAST", "ENHANCED", "T1C", "T1CE", "T1GD", "T1POST", "T1+C", "T1+GD", "T1+", "GADOVIST",
         "DOTAREM", "MAGNEVIST", "PROHANCE", "MULTIHANCE", "CLARISCAN"}
_PRE = {"PRE", "PRECONTRAST", "PRECON", "NATIVE", "NATIV", "NONCONTRAST", "PREGD"}
_NEGATED = re.compile(r"\b(?:NON|NO|WITHOUT|OHNE)[\s_-]*(?:CONTRAST|CON|KM|GD|GAD|C)\b"
                      r"|\bW/?O\b(?:[\s_-]*(?:CONTRAST|CON|KM|GD|GAD|C)\b)?|(?<![A-Z0-9+])-C\b")
_PLAIN = re.compile(r"[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*")
_T1 = re.compile(r"(?:^|[^A-Z0-9]|3D)T1(?![0-9])|MPRAGE|MP2RAGE|MP RAGE|FSPGR|SPGR|BRAVO")
_T2 = re.compile(r"(?:^|[^A-Z0-9]|3D)T2(?![0-9*])")
_FLAIR = re.compile(r"FLAIR|DARK ?FLUID|\bTIRM\b")


def _norm(text: str) -> str:
    return re.sub(r"[_\-./\\(),:]+", " ", text.upper()).strip()


def _tokens(text: str) -> set[str]:
    return set(text.split()) | {text.replace(" ", "")}


def _family(name: str) -> tuple[str | None, str, bool]:
    """``(family or None, why, decided)`` of one name; ``decided`` False: the name says nothing."""
    raw = name.upper()
    text = _norm(_NEGATED.sub(" PRE ", raw))
    if not text:
        return None, "no name", False
    plain = canonical_modality(name) if _PLAIN.fullmatch(name.strip()) else None
    if plain is not None and text.replace(" ", "") not in ("T1", "T1W"):
        return plain, f"named {name.strip()!r}", True
    if "T2*" in raw.replace(" ", "") or _tokens(text) & _OTHER or "3 PLANE" in text:
        return None, "another kind of series", True
    t1, t2 = bool(_T1.search(text)), bool(_T2.search(text))
    if _FLAIR.search(text) and not t1:
        return "flair", "FLAIR", True
    if t1 and t2:
        return None, "names both T1 and T2", True
    if t2:
        return "t2", "T2", True
    if t1:
        return "t1?", "T1", True
    return None, "no T1, T2 or FLAIR in its name", False


def classify_series(description: str, protocol: str = "", *, contrast_agent: str = "") -> tuple[str | None, str]:
    """``(modality or None, why)`` by the rule of the module docstring."""
    fam, why, decided = _family(description)
    if not decided and protocol.strip():
        fam, why, decided = _family(protocol)
    if fam != "t1?":
        return fam, why
    both = f"{description} {protocol}".upper()
    text = _norm(_NEGATED.sub(" PRE ", both))
    toks = {t for w in (description, protocol) for t in _tokens(_norm(_NEGATED.sub(" PRE ", w.upper())))}
    post = bool(toks & _POST) or bool(re.search(r"\+\s*(C|GD|KM)\b|\bC\s*\+", text))
    pre = bool(_NEGATED.search(both)) or bool(toks & _PRE)
    if post and pre:
        return None, "T1 with both contrast and native markers (ambiguous)"
    if post:
        return "t1ce", "T1 with a contrast marker"
    if pre:
        return "t1", "T1 with a native marker"
    if contrast_agent:
        return "t1ce", f"T1 with ContrastBolusAgent {contrast_agent!r}"
    return "t1", "T1 without a contrast marker or agent"


def modality_of(series_description: str, protocol_name: str = "", *, contrast_agent: str = "") -> str | None:
    """The canonical modality (flair, t1, t1ce, t2) of a series by its names, or None when the
    rule of the module docstring does not place it (unknown, another kind, ambiguous)."""
    return classify_series(series_description, protocol_name, contrast_agent=contrast_agent)[0]


def parse_dicom_map(items: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["t1ce=7", "flair=1.2.840..."]`` (or a mapping) -> ``{canonical modality: selector}``."""
    if not items:
        return {}
    pairs = list(items.items()) if isinstance(items, Mapping) else []
    if not isinstance(items, Mapping):
        for item in items:
            if "=" not in str(item):
                raise SingrInputError(f"--dicom-map item {item!r}: expected MODALITY=SERIES (SeriesNumber, "
                                      "SeriesInstanceUID or SeriesDescription), e.g. t1ce=7")
            k, v = str(item).split("=", 1)
            pairs.append((k, v))
    out: dict[str, str] = {}
    for k, v in pairs:
        m = canonical_modality(str(k))
        if m is None:
            raise SingrInputError(f"--dicom-map: unknown modality {k!r}; expected one of {list(MODALITIES)} or "
                                  f"{modality_list(MODALITIES, 'brats2023')}")
        if m in out:
            raise SingrInputError(f"--dicom-map: modality {m} given twice")
        out[m] = str(v).strip()
    return out


def _table(series: Sequence[Any], guesses: Sequence[tuple[str | None, str]]) -> str:
    return "; ".join(f"{s.name} -> {g or '?'} ({why})" for s, (g, why) in zip(series, guesses))


def _select(series: Sequence[Any], selector: str, mod: str) -> Any:
    hits = [s for s in series if selector == s.uid or (s.number is not None and selector == str(s.number))]
    if not hits:
        hits = [s for s in series if selector.lower() == s.description.lower()]
    if len(hits) != 1:
        listed = ", ".join(s.name for s in series)
        what = "no series" if not hits else f"{len(hits)} series ({', '.join(s.name for s in hits)})"
        raise SingrInputError(f"--dicom-map {mod}={selector}: {what} match; expected one SeriesNumber, "
                              f"SeriesInstanceUID or SeriesDescription of: {listed}")
    return hits[0]


def assign_series(series: Sequence[Any], mapping: Mapping[str, str] | None = None,
                  modalities: Sequence[str] = MODALITIES, *, where: str | None = None) -> dict[str, Any]:
    """``{modality: series}`` for ``modalities``: the explicit ``mapping`` first, then the rule
    for the rest. ``series`` need ``name``, ``uid``, ``number``, ``description``, ``protocol``
    and ``contrast_agent`` (:class:`singr.io.dicom_series.DicomSeries`). One error lists every
    problem (a modality no series or several series get) with the table of series."""
    mapping = dict(mapping or {})
    chosen: dict[str, Any] = {m: _select(series, sel, m) for m, sel in mapping.items() if m in modalities}
    taken = {id(s) for s in chosen.values()}
    guesses = [classify_series(s.description, s.protocol, contrast_agent=s.contrast_agent)
               if not getattr(s, "unsupported", None) else (None, "unsupported: " + s.unsupported.split(";")[0])
               for s in series]
    problems: list[str] = []
    for m in modalities:
        if m in chosen:
            continue
        hits = [s for s, (g, _) in zip(series, guesses) if g == m and id(s) not in taken]
        if len(hits) == 1:
            chosen[m] = hits[0]
        elif not hits:
            problems.append(f"no series for {m}")
        else:
            problems.append(f"{m} claimed by {len(hits)} series ({' and '.join(s.name for s in hits)})")
    if problems:
        example = " ".join(f"{m}=<SeriesNumber>" for m in modalities)
        raise SingrInputError(f"cannot tell the DICOM series apart: {', '.join(problems)}. Series: "
                              f"{_table(series, guesses) or 'none'}. Name the series of each modality with "
                              f"--dicom-map {example} (SeriesNumber, SeriesInstanceUID or SeriesDescription)",
                              path=where)
    return {m: chosen[m] for m in modalities}
