"""fetch: an entry's source (OpenML, a CSV/parquet file, an image folder, a sklearn loader) ->
one parquet file + provenance JSON (source, content hashes, counts)."""

from stages.layout import layout
from tandem import console, data, io

PARAMS = ("fetch.data_home", "datasets.{name}")


def run(params, name: str) -> None:
    entry, paths = params.datasets[name], layout(name)
    with console.status(f"reading {name} ({entry.source})"):
        if entry.source == "openml":
            frame, provenance = data.fetch_openml_frame(
                entry.data_id, target=entry.target, data_home=params.fetch.data_home
            )
        elif entry.source == "file":
            frame, provenance = data.read_table_file(entry.path, target=entry.target)
        elif entry.source == "images":
            frame, provenance = data.read_image_folder(
                entry.path, shape=entry.image_shape, channels=entry.channels, target=entry.target
            )
        else:
            frame, provenance = data.load_sklearn_frame(entry.name, target=entry.target)
    if entry.modality == "image" and frame.shape[1] - 1 != entry.n_pixels:
        raise data.DataError(
            f"datasets.{name}: {frame.shape[1] - 1} feature columns, but image_shape "
            f"{list(entry.image_shape)} x {entry.channels} channel(s) needs {entry.n_pixels}"
        )
    io.write_parquet(paths.raw, frame)
    io.write_json(paths.provenance, provenance)
