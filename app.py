"""The app: ``python app.py [options]`` is ``assistant serve [options]``.

Serves the latest evaluation winner (or --variant) as a chat app with a blind arena, a leaderboard and the
latest report, with an OpenAI-compatible API beside it on the same server. The code is in assistant/serve/;
``python app.py --help`` lists every option.
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from assistant.serve.server import main  # noqa: E402  (analytics off before gradio can be imported)

if __name__ == "__main__":
    sys.exit(main())
