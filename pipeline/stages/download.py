"""Stage download: fetch names.txt (or take it from the offline cache) and verify its hash."""

from actgrad.data.names import default_cache_dir, fetch_names, read_words
from actgrad.params import DataParams, section

from ..files import Text
from ..runner import Stage


def compute(params):
    text = fetch_names(params.url, params.sha256, default_cache_dir()).decode()
    read_words(text, params.url)  # refuse a file with no usable names here, not deep in training
    return {"names": text}


STAGE = Stage(
    name="download",
    compute=compute,
    outputs={"names": Text},
    params=lambda path: section(path, "data", DataParams),
    describe=lambda made: f"{made.params.url} (offline cache {default_cache_dir()})",
    summary=lambda made: f"wrote {made.paths['names']}",
)

if __name__ == "__main__":
    STAGE.main()
