"""Save a screenshot of the room page to docs/screenshot-room.png (the README shows it).

Runs the browser test that plays a short conversation of three people in a room created
through the form, with its output path set: ``python bench/screenshot.py [PATH]``. Needs what
the browser tests need: Debian's chromium and the test database (started by pytest itself).
"""
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
TEST = "tests/test_browser.py::test_a_room_made_with_the_form_shows_a_conversation_of_three"


def main():
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot-room.png").resolve()
    before = target.stat().st_mtime_ns if target.exists() else None
    env = {**os.environ, "CHAT_SCREENSHOT_PATH": str(target)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", TEST], cwd=BASE_DIR, env=env)
    if result.returncode:
        return result.returncode
    if not target.exists() or target.stat().st_mtime_ns == before:
        print("no screenshot taken: was the test skipped?", file=sys.stderr)
        return 1
    print(f"saved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
