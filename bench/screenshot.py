"""Save a screenshot of the room page to docs/screenshot-room.png (the README shows it).

Runs the browser test that plays a short conversation of three people in a room created
through the form, with its output path set: ``python bench/screenshot.py [PATH]``. With
``--features``, the room with an edited message, a mention and the "New messages" line, to
docs/screenshot-features.png. Needs what the browser tests need: Debian's chromium and the
test database (started by pytest itself).
"""
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
#: (the test, the variable it reads the path from, the default path)
SHOTS = {
    "room": ("tests/test_browser.py::test_a_room_made_with_the_form_shows_a_conversation_of_three",
             "CHAT_SCREENSHOT_PATH", "docs/screenshot-room.png"),
    "features": ("tests/test_browser_unread.py::test_a_mention_is_highlighted_and_counted_in_the_header_live_and_on_the_next_visit",
                 "CHAT_FEATURES_SCREENSHOT_PATH",
                 "docs/screenshot-features.png"),
}


def main():
    args = sys.argv[1:]
    test, variable, default = SHOTS["features" if "--features" in args else "room"]
    paths = [arg for arg in args if arg != "--features"]
    target = Path(paths[0] if paths else default).resolve()
    before = target.stat().st_mtime_ns if target.exists() else None
    env = {**os.environ, variable: str(target)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", test], cwd=BASE_DIR, env=env)
    if result.returncode:
        return result.returncode
    if not target.exists() or target.stat().st_mtime_ns == before:
        print("no screenshot taken: was the test skipped?", file=sys.stderr)
        return 1
    print(f"saved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
