"""Keeping the UI on the synced fleet: after a sync that changed the expected backups, the Dagster
webserver (BACKUP_PIPELINE_DAGSTER_URL) is asked to reload the code location, which reads the fleet
from PostgreSQL again. Its assets then name the expected backups the scans evaluate, without anyone
pressing "Reload" — the code location reads the fleet when it loads, and only then.

Best effort: without the URL, or when the webserver cannot be reached, the caller says so in one line
(the scans' events are recorded either way, and show once the location is reloaded).
"""

from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from backup_pipeline.config.settings import Settings

CODE_LOCATION = "backup_pipeline"  # workspace.yaml, [tool.dagster] and `dg` (the project's name)
TIMEOUT_SECONDS = 120  # a location of 20,000 expected backups loads in seconds; the webserver waits for it


class Reload(NamedTuple):
    asked: bool  # a webserver was named (BACKUP_PIPELINE_DAGSTER_URL)
    reloaded: bool
    message: str  # what happened, in one line


def reload_code_location(settings: Settings) -> Reload:
    """Ask the webserver to reload the code location (never raises)."""
    if not settings.dagster_url:
        return Reload(False, False, "the synced fleet changed: reload the code location in the Dagster UI")
    # Imported here, not with the module: the GraphQL client's imports cost every process loading the
    # definitions (code servers, run workers, commands) a sixth of a second, for a call made after a sync.
    from dagster_graphql import DagsterGraphQLClient, ReloadRepositoryLocationStatus
    from requests.auth import HTTPBasicAuth

    url = urlsplit(settings.dagster_url)
    where = f"{url.hostname}:{url.port}" if url.port else str(url.hostname)  # never the credentials
    try:
        client = DagsterGraphQLClient(
            url.hostname or "localhost",
            port_number=url.port,
            use_https=url.scheme == "https",
            timeout=TIMEOUT_SECONDS,
            path_prefix=url.path.rstrip("/"),
            auth=HTTPBasicAuth(unquote(url.username), unquote(url.password or "")) if url.username else None,
        )
        info = client.reload_repository_location(CODE_LOCATION)
    except Exception as exc:  # the client raises its own errors, requests' and gql's: any is "not reached"
        cause = exc.__cause__ or exc  # the client's own error quotes its query; the cause says why
        reason = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else type(cause).__name__
        return Reload(
            True, False, f"the synced fleet changed; the Dagster UI at {where} could not reload: {reason}"
        )
    if info.status == ReloadRepositoryLocationStatus.SUCCESS:
        return Reload(
            True, True, f"the synced fleet changed: the Dagster UI at {where} reloaded {CODE_LOCATION}"
        )
    return Reload(
        True, False, f"the synced fleet changed; the Dagster UI at {where} failed to reload: {info.message}"
    )
