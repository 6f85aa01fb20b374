"""A ``.pt`` model is a pickle, and loading a pickle runs whatever it says: Ultralytics unpickles the
whole file (``torch.load(weights_only=False)``). Before it does, the pickle's imports are read
(without running anything) and held against what Ultralytics checkpoints contain; a file that would
import anything else (``os.system``, ``subprocess``, ``builtins.eval``, ...) is refused with one line.
``filter.trust_model: true`` skips the check for a file you trust. ONNX, TensorRT and other
exports are not pickles and are not checked."""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path

from ..errors import ModelError

PICKLED = (".pt", ".pth")
#: (module, name) patterns of what an Ultralytics checkpoint unpickles: the model's layers, torch's
#: tensor rebuilding, numpy scalars in its training metrics, plain containers and values.
_ALLOWED = [re.compile(p) for p in (
    r"ultralytics(\.[\w.]+)? \w+",
    r"torch\.nn(\.[\w.]+)? \w+",
    r"torch \w*Storage|torch (Size|device|dtype|float\w*|int\w*|uint\w*|bfloat16|half|bool|complex\w*)",
    r"torch\._utils _rebuild_\w+",
    r"torch\.storage (Typed|Untyped)Storage",
    r"torch\._tensor _rebuild_from_type_v2",
    r"torch\.serialization _get_layout",
    r"numpy(\._core|\.core)?\.multiarray (_reconstruct|scalar)",
    r"numpy (dtype|ndarray)",
    r"numpy\.dtypes \w+DType",
    r"(__builtin__|builtins) (set|frozenset|list|dict|tuple|slice|range|complex|bytearray|bytes|int|float|str|bool|object)",
    r"collections (OrderedDict|defaultdict|deque)",
    r"_codecs encode",
    r"copyreg _reconstructor",
    r"pathlib (PosixPath|WindowsPath|Path|PurePosixPath|PureWindowsPath)",
    r"datetime (datetime|date|timedelta|timezone)",
    r"types SimpleNamespace",
    r"argparse Namespace",
)]
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def _pickles(path: Path) -> list[bytes]:
    """The pickle streams of a checkpoint: ``data.pkl`` of torch's zip format, or the whole file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.read(name) for name in archive.namelist() if name.endswith(".pkl")]
    return [path.read_bytes()]


def imports(data: bytes) -> set[tuple[str, str]]:
    """Every (module, name) a pickle imports (GLOBAL and STACK_GLOBAL), read without running it."""
    found: set[tuple[str, str]] = set()
    recent: list[str] = []  # string constants, in order, as STACK_GLOBAL takes its two from them
    memo: dict[int, str] = {}
    last: str | None = None
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in _STRINGS and isinstance(arg, str | bytes):
            last = arg if isinstance(arg, str) else arg.decode("latin-1")
            recent.append(last)
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and last is not None and isinstance(arg, int):
            memo[arg] = last
        elif op.name == "MEMOIZE" and last is not None:
            memo[len(memo)] = last
        elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(arg, int) and arg in memo:
            last = memo[arg]
            recent.append(last)
        elif op.name == "GLOBAL" and isinstance(arg, str):
            module, _, name = arg.partition(" ")
            found.add((module, name))
        elif op.name == "STACK_GLOBAL":
            found.add((recent[-2], recent[-1]) if len(recent) >= 2 else ("?", "?"))
        if op.name not in _STRINGS and op.name not in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            last = None
    return found


def check_model_file(path: Path) -> None:
    """A :class:`ModelError` naming the first import an Ultralytics checkpoint would not make."""
    if path.suffix.lower() not in PICKLED or not path.is_file():
        return
    try:
        found = set().union(*(imports(data) for data in _pickles(path)))
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"{path}: not a model file ({exc})") from exc
    strange = sorted(f"{m}.{n}" for m, n in found if not any(p.fullmatch(f"{m} {n}") for p in _ALLOWED))
    if strange:
        raise ModelError(f"{path}: loading it would run {', '.join(strange[:3])}: a model file is code, and this one "
                         "is not an Ultralytics checkpoint", "use a model you trust; if you trust this one, set "
                         "filter.trust_model: true")
