"""Copy the master copy of each kit (tools/kit/NAME.py) into every script of algos/ that holds that kit,
between its marker lines `# ==== kit: NAME ====` and `# ==== end of kit: NAME ====`.

    python tools/sync_kit.py            # rewrite the scripts whose copies differ
    python tools/sync_kit.py --check    # only list them; exit 1 if any differs
    python tools/sync_kit.py --lines    # lines per script: the paper on top, the kits below

Every script holds the run kit; the family kits (atari, workers, replay, ...) are in the scripts of their
family. tests/test_kit.py runs the check in CI."""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kits() -> dict[str, str]:
    """{name: text} of the master copies, each from its first marker line to its end marker line."""
    masters = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tools", "kit", "*.py"))):
        name = os.path.basename(path).removesuffix(".py")
        with open(path) as f:
            masters[name] = f.read()
    return masters


def block_pattern(name: str) -> re.Pattern:
    """The block of kit `name` in a script: from the start of its first marker line through its end marker."""
    return re.compile(rf"^# ==== kit: {name} ====.*?^# ==== end of kit: {name} ====\n", re.S | re.M)


def blocks_in(text: str) -> list[str]:
    """The names of the kits a script holds."""
    return re.findall(r"^# ==== kit: (\w+) ====", text, re.M)


def sync(check: bool) -> list[str]:
    """Bring every script's copies in line with the masters; return 'script: kit' for each copy that differed."""
    masters, differing = kits(), []
    for path in sorted(glob.glob(os.path.join(ROOT, "algos", "*.py"))):
        with open(path) as f:
            text = f.read()
        new = text
        for name in blocks_in(text):
            if name not in masters:
                raise SystemExit(f"{path}: kit {name!r} has no master copy in tools/kit/")
            found = block_pattern(name).findall(new)
            if len(found) != 1:
                raise SystemExit(f"{path}: kit {name!r} needs exactly one block with its end marker, found {len(found)}")
            if found[0] != masters[name]:
                differing.append(f"{os.path.relpath(path, ROOT)}: {name}")
                new = block_pattern(name).sub(lambda _: masters[name], new)
        if new != text and not check:
            with open(path, "w") as f:
                f.write(new)
    return differing


def line_counts() -> list[tuple[str, int, int, int]]:
    """(script, all lines, the paper on top, the kits below) per script. The kits below are the kit blocks at
    the end of the file with nothing but blank lines between them; a kit placed in the top part (shared
    math) counts as the paper's."""
    rows = []
    for path in sorted(glob.glob(os.path.join(ROOT, "algos", "*.py"))):
        with open(path) as f:
            lines = f.read().splitlines()
        bottom, inside = len(lines), False
        for i in range(len(lines) - 1, -1, -1):
            line = lines[i]
            if line.startswith("# ==== end of kit: "):
                inside = True
            elif line.startswith("# ==== kit: "):
                inside, bottom = False, i
            elif not inside and line.strip():
                break
        rows.append((os.path.basename(path), len(lines), bottom, len(lines) - bottom))
    return rows


if __name__ == "__main__":
    if "--lines" in sys.argv[1:]:
        print(f"{'script':<16}{'all':>6}{'paper':>7}{'kits':>6}")
        for name, total, paper, kit in line_counts():
            print(f"{name:<16}{total:>6}{paper:>7}{kit:>6}")
        sys.exit(0)
    check = "--check" in sys.argv[1:]
    differing = sync(check)
    for line in differing:
        print(("differs: " if check else "copied: ") + line)
    sys.exit(1 if check and differing else 0)
