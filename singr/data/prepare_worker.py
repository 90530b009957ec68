"""The brainles-preprocessing run of ``singr prepare``, in the interpreter that has the package.

brainles-preprocessing (and antspyx under it) pins numpy < 2.4 and scipy < 1.16, so it lives in
a virtual environment of its own (``scripts/setup_prepare.sh`` makes ``.venv-prepare``) and this
file runs there as a script: ``python prepare_worker.py SPEC.json``. It imports nothing from
singr (singr's dependencies are not in that environment); :mod:`singr.data.prepare` writes the
spec, runs it, streams its progress and checks what it wrote.

The spec (JSON)::

    {"inputs":  {"t1c": "in/t1c.nii.gz", "t1n": ..., "t2w": ..., "t2f": ...},  # center first
     "outputs": {"t1c": "out/t1c.nii.gz", ...},
     "atlas": "brats_sri24" | "/path/atlas.nii.gz" | null,     # null: stay in the center's space
     "brain_extraction": "hd-bet" | "synthstrip" | "none",
     "work": "tmp dir", "log": "prepare.log", "transforms": "transforms dir", "gpu": false,
     "mask": "out/brain_mask.nii.gz",                          # the center's brain mask (with brain extraction)
     "download": true}                                         # false: refuse instead of downloading

Steps (brainles-preprocessing's own order): every other modality is registered rigidly to the
center (ANTs), the center to the atlas (rigid; the others follow through the composed transform,
then are re-registered to the center in atlas space: "atlas correction"), and the brain mask of
the center is applied to every modality. What must be downloaded at first use is fetched before
any step runs, so that an offline machine fails at once with one line naming every step that
needs a file, where it comes from and where it goes (exit status 2, the line prefixed
``singr-prepare-error: ``); with ``"download": false`` nothing is fetched:

* the named atlases: Zenodo record 15236131, into brainles_preprocessing/registration/atlases/15236131_v<version>;
* HD-BET's 5 networks: https://zenodo.org/record/2540695/files/{0..4}.model, into
  brainles_hd_bet/model_weights;
* SynthStrip's network: Zenodo record 16535633, into
  brainles_preprocessing/brain_extraction/weights/16535633_v<version>.

A local copy of a record is used as it is (brainles itself would ask Zenodo for a newer version
on every run): a run that has what it needs never reaches the internet.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

ERROR = "singr-prepare-error: "
DOWNLOAD_TIMEOUT_S = 30.0
ATLASES = {"brats_sri24": "BRATS_SRI24", "brats_sri24_skullstripped": "BRATS_SRI24_SKULLSTRIPPED",
           "sri24": "SRI24", "sri24_skullstripped": "SRI24_SKULLSTRIPPED", "brats_mni152": "BRATS_MNI152",
           "mni152": "MNI152"}


class Refused(Exception):
    """A problem the user can act on: printed as one line, exit status 2."""


class Needs:
    """The downloads a run needs that are not on disk yet; fetched, or refused in one line."""

    def __init__(self, download: bool) -> None:
        self.download = download
        self.failed: list[str] = []

    def fetch(self, what: str, source: str, folder: object, flag: str, get: Callable[[], Any]) -> Any:
        """``get()`` (the download, returning where it put the files) unless downloads are off;
        None after noting why it did not happen."""
        if self.download:
            try:
                return get()
            except Exception as e:  # ZenodoException, URLError, timeouts
                why = f"the download failed ({type(e).__name__}: {str(e)[:160]})"
        else:
            why = "downloads are off (--no-download)"
        self.failed.append(f"{what} (downloaded at first use from {source} into {folder}): {why}; or pass {flag}")
        return None

    def check(self) -> None:
        if self.failed:
            raise Refused("; ".join(self.failed) + ". Run once where zenodo.org is reachable (the files are kept "
                          "for later runs), or copy them into those folders by hand")


def local_record(folder: Path, record_id: str) -> Path | None:
    """The newest non-empty ``<record_id>_v<x.y.z>`` folder under ``folder``: where brainles keeps a
    Zenodo record it downloaded (``utils/zenodo.py``: ``ZenodoRecord._get_latest_version_folder_name``)."""
    found = []
    for d in Path(folder).glob(f"{record_id}_v*.*.*"):
        try:
            version = tuple(int(x) for x in d.name.split("_v", 1)[1].split("."))
        except ValueError:
            continue
        if d.is_dir() and any(d.iterdir()):
            found.append((version, d))
    return max(found)[1] if found else None


def _use_local(record_id: str, folder: Path, local: Path) -> None:
    """Make brainles' own later ``fetch`` of this record return ``local`` without asking Zenodo for a
    newer version (its per-process cache, keyed as in brainles-preprocessing 0.6.14)."""
    from brainles_preprocessing.utils import zenodo

    zenodo.ZenodoRecord._cache[(record_id, str(folder))] = local


def resolve_atlas(atlas: str | None, needs: Needs) -> Path | None:
    """The atlas image: None (no atlas step), a file given by path, or a named atlas: the newest
    local copy of brainles' atlas record, else fetched (into ``ATLASES_FOLDER/<record>_v<version>``)."""
    if atlas is None:
        return None
    if atlas.lower() in ATLASES:
        from brainles_preprocessing.constants import Atlas
        from brainles_preprocessing.utils import zenodo

        name = Atlas[ATLASES[atlas.lower()]].value
        folder, record = Path(zenodo.ATLASES_FOLDER), zenodo.ATLASES_RECORD_ID
        local = local_record(folder, record)
        if local is None:
            local = needs.fetch(f"atlas registration needs the atlas {name}", f"Zenodo record {record}", folder,
                                "--atlas PATH (an atlas NIfTI you have) or --atlas none", zenodo.fetch_atlases)
            if local is None:
                return folder / name  # refused below (Needs.check), never used
        _use_local(record, folder, local)
        if not (local / name).is_file():
            raise Refused(f"the atlas record in {local} holds no {name}; expected one of "
                          f"{sorted(p.name for p in local.iterdir())[:8]}")
        return local / name
    path = Path(atlas)
    if not path.is_file():
        raise Refused(f"atlas {path}: no such file (expected a NIfTI image, or one of {sorted(ATLASES)})")
    return path


def brain_extractor(name: str, needs: Needs) -> object | None:
    """The brainles extractor for ``name``, its weights fetched first (see the module docstring)."""
    if name == "none":
        return None
    flag = "--brain-extraction none for input that is already skull-stripped"
    if name == "hd-bet":
        from brainles_hd_bet import utils as hdu
        from brainles_preprocessing.brain_extraction import HDBetExtractor

        absent = [f for f in range(5) if not Path(hdu.get_params_fname(f)).is_file()]  # "accurate" mode: 5 folds

        def get() -> None:
            for fold in absent:
                try:
                    hdu.maybe_download_parameters(fold)
                except BaseException:
                    Path(hdu.get_params_fname(fold)).unlink(missing_ok=True)  # never a half-written file
                    raise
        if absent:
            needs.fetch(f"brain extraction (HD-BET) needs its network weights ({len(absent)} files)",
                        "https://zenodo.org/record/2540695/files/{0..4}.model", hdu.folder_with_parameter_files,
                        flag, get)
        return HDBetExtractor()
    if name == "synthstrip":
        from brainles_preprocessing.brain_extraction.synthstrip import SynthStripExtractor
        from brainles_preprocessing.utils import zenodo

        folder, record = Path(zenodo.SYNTHSTRIP_FOLDER), zenodo.SYNTHSTRIP_RECORD_ID
        local = local_record(folder, record)
        if local is None or not (local / "synthstrip.1.pt").is_file():
            local = needs.fetch("brain extraction (SynthStrip) needs its network weights", f"Zenodo record {record}",
                                folder, flag, zenodo.fetch_synthstrip)
        if local is not None:
            _use_local(record, folder, local)  # the extractor fetches again when it runs: no second request
        return SynthStripExtractor()
    raise Refused(f"unknown brain extraction {name!r}; expected hd-bet, synthstrip or none")


def check_gpu(gpu: bool) -> None:
    """Without ``gpu`` no CUDA device is visible (brainles hands HD-BET ``torch.device("cpu")``, which
    HD-BET's ``device == "cpu"`` test misses: with a CUDA build it would call ``net.cuda`` on it);
    with it, a CUDA device must be there."""
    if not gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return
    import torch

    if not torch.cuda.is_available():
        raise Refused(f"--gpu: no CUDA device in this environment (torch {torch.__version__}); .venv-prepare holds "
                      "the CPU build unless it was made with SINGR_TORCH_SPEC naming a CUDA build of torch")


def run(spec: dict) -> None:
    """Run brainles-preprocessing as ``spec`` says (module docstring)."""
    check_gpu(bool(spec.get("gpu")))
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # an unreachable host fails in seconds, not minutes
    needs = Needs(bool(spec.get("download", True)))
    atlas = resolve_atlas(spec.get("atlas"), needs)
    extractor = brain_extractor(spec.get("brain_extraction", "none"), needs)
    needs.check()
    socket.setdefaulttimeout(None)

    from brainles_preprocessing.modality import CenterModality, Modality
    from brainles_preprocessing.preprocessor import AtlasCentricPreprocessor, NativeSpacePreprocessor
    from brainles_preprocessing.registration import ANTsRegistrator

    work = Path(spec["work"])
    names = list(spec["inputs"])
    mods = []
    for i, name in enumerate(names):
        out = spec["outputs"][name]
        kind = CenterModality if i == 0 else Modality
        extra = ({"bet_mask_output_path": spec.get("mask") or work / "brain_mask.nii.gz"}
                 if i == 0 and extractor is not None else {})
        mods.append(kind(modality_name=name, input_path=spec["inputs"][name],
                         raw_bet_output_path=out if extractor is not None else None,
                         raw_skull_output_path=None if extractor is not None else out, **extra))
    common = dict(center_modality=mods[0], moving_modalities=mods[1:], registrator=ANTsRegistrator(),
                  brain_extractor=extractor, temp_folder=work / "brainles", use_gpu=bool(spec.get("gpu")))
    if atlas is not None:
        pre = AtlasCentricPreprocessor(atlas_image_path=atlas, **common)
    else:
        pre = NativeSpacePreprocessor(**common)
    pre.run(save_dir_transformations=spec.get("transforms"), log_file=spec.get("log"))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: python {Path(__file__).name} SPEC.json", file=sys.stderr)
        return 2
    try:
        run(json.loads(Path(argv[0]).read_text()))
    except Refused as e:
        print(ERROR + str(e), file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
