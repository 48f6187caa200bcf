"""`musicgen serve`: a local web page to generate, see, hear and download tunes.

The HTTP layer (`app`) is thin over the same library calls `musicgen generate` makes; the model
work runs in one worker thread behind a bounded queue (`worker`), one batch at a time (`batch`).
Every asset is served by the package itself, so the page works offline.
"""
