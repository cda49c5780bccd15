"""``ex4d ui``: a local web app (Gradio) to upload a video, design a camera path with a live DW-Mesh preview,
generate, and download the results. Needs the ``ui`` extra: ``pip install "ex4d[ui]"``."""
