"""The client's token: a fixed one, or one an async provider hands out and renews."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

TokenProvider = Callable[[], Awaitable[str]]
"""An async callable returning a bearer token (a JWT), called again whenever one is needed."""


class Credentials:
    """A fixed ``token``, a ``provider``, or neither (anonymous reads).

    The provider is called for the first request, again once when the service refuses the token
    (``401``), and before every Socket.IO (re)connect."""

    def __init__(self, token: str | None = None, provider: TokenProvider | None = None) -> None:
        if token is not None and provider is not None:
            raise ValueError("give a token or a token_provider, not both")
        self._token = token
        self._provider = provider
        self._lock = asyncio.Lock()

    @property
    def renewable(self) -> bool:
        return self._provider is not None

    async def token(self) -> str | None:
        """The current token, asking the provider for the first one."""
        if self._token is None and self._provider is not None:
            return await self.renew(None)
        return self._token

    async def renew(self, refused: str | None) -> str | None:
        """A new token from the provider, in place of ``refused``. Callers refused together get
        one new token between them: the provider is asked only if ``refused`` is still current."""
        if self._provider is None:
            return self._token
        async with self._lock:
            if self._token == refused:
                self._token = await self._provider()
            return self._token

    async def fresh(self) -> str | None:
        """A token from the provider now (before a socket connects: a socket keeps the token it
        connected with until it expires); the fixed token when there is no provider."""
        if self._provider is None:
            return self._token
        async with self._lock:
            self._token = await self._provider()
            return self._token
