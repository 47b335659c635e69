"""Copies ONNX Runtime's shared libraries out of a downloaded wheel (a zip file) into one folder.

    python3 extract_onnxruntime.py WHEEL DEST LIB [LIB...]

Each LIB is a file name under onnxruntime/capi/ in the wheel; a missing one is an error. The core
library also gets its SONAME link (libonnxruntime.so.1) and the development name
(libonnxruntime.so), both relative symlinks in DEST.
"""

from __future__ import annotations

import re
import shutil
import sys
import zipfile
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    wheel, dest, libs = Path(argv[1]), Path(argv[2]), argv[3:]
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for lib in libs:
            member = f"onnxruntime/capi/{lib}"
            if member not in names:
                print(f"{wheel.name} has no {member}", file=sys.stderr)
                return 1
            target = dest / lib
            with zf.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            target.chmod(0o644)
            print(f"{member} -> {target} ({target.stat().st_size} bytes)")
            if re.fullmatch(r"libonnxruntime\.so\.\d+\.\d+\.\d+", lib):
                for alias in ("libonnxruntime.so.1", "libonnxruntime.so"):
                    link = dest / alias
                    if link.is_symlink() or link.exists():
                        link.unlink()
                    link.symlink_to(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
