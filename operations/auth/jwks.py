"""The identity provider's signing keys, read from its JWKS URL and looked up by ``kid``.

PyJWT's :class:`jwt.PyJWKClient` fetches and parses the key set. It does blocking ``urllib`` I/O,
so every fetch runs in a worker thread, bounded by a timeout, and never on the event loop. The keys
of the last good fetch are kept on the loop, so verifying a token needs no thread at all:

- the set is fetched again once it is older than ``lifespan_seconds``, or when a token names a
  ``kid`` the set does not hold (a key rotation);
- fetches start at most once every ``min_refetch_seconds``, whatever the tokens say, and every
  verification that needs the set meanwhile waits for the one fetch under way;
- a JWKS that cannot be fetched is logged at WARNING and counted
  (``operations_jwks_fetch_failures_total``); the keys already known stay in use, and a token whose
  key is unknown is refused with a :class:`TokenError`, answered with ``401``.

The fetch is a background task (:class:`operations.tasks.BackgroundTasks`);
:meth:`ProviderKeys.stop`, called when the service stops, cancels one in flight (verifications
waiting for it are refused) and starts no other.

Ages are read from ``clock`` (monotonic seconds), which tests replace to move time on by hand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from jwt import PyJWK, PyJWKClient

from operations.errors import TokenError
from operations.metrics import Registry
from operations.tasks import BackgroundTasks

log = logging.getLogger("operations.auth.jwks")

LIFESPAN_SECONDS = 300.0
MIN_REFETCH_SECONDS = 10.0
FETCH_TIMEOUT_SECONDS = 5.0
MAX_KEYS = 64
# The key type each accepted provider algorithm needs: an RS256 token is never checked with an EC
# key, nor an ES256 token with an RSA one.
KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}


class ProviderKeys:
    def __init__(
        self,
        url: str,
        metrics: Registry,
        lifespan_seconds: float = LIFESPAN_SECONDS,
        min_refetch_seconds: float = MIN_REFETCH_SECONDS,
        fetch_timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.lifespan_seconds = lifespan_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.fetch_timeout_seconds = fetch_timeout_seconds
        self.clock = clock
        self._client = PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=lifespan_seconds,
            timeout=fetch_timeout_seconds,
            headers={"User-Agent": "operations", "Accept": "application/json"},
        )
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._tasks = BackgroundTasks(metrics, log)
        self._stopped = False

    async def key(self, kid: object, algorithm: str) -> PyJWK:
        """The key that signed a token with this ``kid`` and ``alg``, or a TokenError."""
        if not isinstance(kid, str) or not kid:
            raise TokenError("token has no kid to find its key by")
        if self._stale() or kid not in self._keys:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            if self._fetched_at is None:
                raise TokenError("the identity provider's keys could not be fetched")
            raise TokenError(f"token key {kid!r} is not in the identity provider's key set")
        if KEY_TYPES.get(algorithm) != key.key_type or key.algorithm_name != algorithm:
            raise TokenError(f"token algorithm {algorithm} does not match its key {kid!r}")
        return key

    def _stale(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= self.lifespan_seconds

    async def _refresh(self) -> None:
        """Waits for the fetch under way, or starts one if none started lately."""
        if self._fetching is None:
            now = self.clock()
            if self._stopped or (
                self._attempted_at is not None
                and now - self._attempted_at < self.min_refetch_seconds
            ):
                return
            self._attempted_at = now
            self._fetching = self._tasks.start("operations-jwks-fetch", self._fetch())
        fetching = self._fetching
        try:
            # Shielded: a client that goes away must not cancel the fetch others are waiting for.
            await asyncio.shield(fetching)
        except asyncio.CancelledError:
            waiter = asyncio.current_task()
            if not fetching.cancelled() or (waiter is not None and waiter.cancelling()):
                raise
            # The fetch was cancelled by stop(): the keys known so far answer.

    async def start(self) -> None:
        self._stopped = False

    async def stop(self) -> None:
        """Cancels a fetch in flight and waits for it to end; none starts after."""
        self._stopped = True
        await self._tasks.stop()
        self._fetching = None

    async def _fetch(self) -> None:
        try:
            keys = await asyncio.wait_for(
                asyncio.to_thread(self._client.get_signing_keys, True),
                timeout=self.fetch_timeout_seconds + 1.0,
            )
        except Exception as error:
            # Whatever the provider or the network does, tokens are refused, not the request.
            self.metrics.jwks_fetch_failures.inc()
            log.warning(
                "could not fetch the identity provider's keys from %s (%s: %s); tokens signed"
                " with keys not fetched before are refused until it answers",
                self.url,
                type(error).__name__,
                error,
            )
        else:
            usable = {
                key.key_id: key for key in keys if key.key_id and key.key_type in {"RSA", "EC"}
            }
            self._keys = dict(list(usable.items())[:MAX_KEYS])
            self._fetched_at = self.clock()
            self.metrics.jwks_fetches.inc()
            log.info("fetched %d signing keys from %s", len(self._keys), self.url)
        finally:
            self._fetching = None
