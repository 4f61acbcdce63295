"""One running CompositeController or DecoratorController: workers pulling parent keys off its queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

from emulator.hookcall import RetryAfter
from emulator.mc_common import (
    ParentKey,
)
from emulator.mc_decorator import DecoratorMixin
from emulator.mc_events import EventsMixin


class Runtime(EventsMixin, DecoratorMixin):
    """A controller's queue, workers and sync entry point; the steps live in the mixins it is made of."""

    def start(self, workers: int) -> None:
        if self.disabled:
            self.mc.record(self.name, "", None, "ignored", self.disabled)
            return
        problem = self.resolve_hooks()
        if problem:
            # Metacontroller records "Cannot create new controller" and retries the reconcile with backoff.
            self.create_error = problem
            self.mc.record(self.name, "", None, "create-error", f"Cannot create new controller: {problem}")
            delay = min(self.mc.backoff_base * 2 ** self.create_attempts, self.mc.backoff_cap)
            self.create_attempts += 1
            self.next_create = time.monotonic() + delay
            return
        self.create_error = ""
        for index in range(workers):
            thread = threading.Thread(target=self._work, name=f"mc-{self.name}-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.enqueue_all()
        self._next_resync = time.monotonic() + self.resync_period()

    def resync_period(self) -> float:
        period = self.spec.get("resyncPeriodSeconds")
        return max(float(period), self.mc.min_resync_period) if period else 0.0

    def stop(self) -> None:
        self.queue.shut_down()
        for thread in self.threads:
            thread.join(timeout=15)
        self.threads = []

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                self.sync(key)
            except RetryAfter as exc:
                self.queue.add_after(key, exc.seconds)
            except Exception as exc:  # every failure is retried with backoff, like the real controller
                message = f"Sync error: {exc}"
                self.mc.record(self.name, str(key), None, "sync-error", message)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)
                self.mc.notify()

    def sync(self, key: Hashable) -> None:
        assert isinstance(key, ParentKey)
        rt = next((rt for rt in ([self.parent_rt] if self.composite else [r for _, r in self.resource_rules])
                   if rt and (rt.group, rt.kind) == (key.group, key.kind)), None)
        if rt is None:
            return
        parent = self.store.try_get(rt.api_version, rt.kind, key.name, key.namespace)
        if parent is None or not self.tracked(parent):
            return
        if self.composite:
            self.sync_composite(parent, key)
        else:
            self.sync_decorator(parent, rt, key)
