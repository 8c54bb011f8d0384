"""ML Metadata of a local run, read-only: the progress bar, the summary table and the tests read it while (or after)
the LocalDagRunner writes it."""

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2


def read_only_store(metadata_path: str) -> metadata_store.MetadataStore:
    """The SQLite MLMD store at ``metadata_path``, opened read-only (it is never created or migrated here)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)
