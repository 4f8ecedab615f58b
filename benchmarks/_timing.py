"""Timing helpers shared by the benchmarks (not part of the library).

`TokenRing` runs several training configurations, each in its own process,
so that exactly one of them computes at any time and they take turns every
few training steps. On a shared, noisy machine every configuration then sees
the same mixture of load from other processes, so their epoch times can be
compared; timing one configuration after another (even epoch by epoch) lets a
burst of outside load land on one of them alone.

Protocol (over a `multiprocessing` pipe): a worker sends `("ready", info)`
once set up, then blocks until the parent sends `"go"`. Holding the token it
trains until a hand-over point, where it sends `("yield",)`,
`("epoch", index, turn_walls, turn_cpus)` (seconds of each turn of the epoch) or `("done", info)` and, except
after `"done"`, blocks again. The parent passes the token round robin.
"""

import multiprocessing
import statistics
import time


def make_turn_timer(callback_base, conn, steps_per_turn):
    """A callback that times epochs and hands the token over every few steps.

    Args:
      callback_base: `keras.callbacks.Callback` or `tf_keras.callbacks.Callback`.
      conn: The worker's end of the pipe to the parent.
      steps_per_turn: Training steps per turn; the token is also handed over
        at every epoch end.

    Epoch time counts only the time this worker held the token between
    `on_epoch_begin` and `on_epoch_end`. The hand-over happens in
    `on_train_batch_begin` (put the timer last in the callback list, so other
    callbacks' batch-begin work is counted). It overrides no batch-end hook,
    so Keras 3 keeps dispatching batch-end callbacks asynchronously when no
    other callback needs them.
    """

    class TurnTimer(callback_base):
        def __init__(self):
            super().__init__()
            self._walls, self._cpus = [], []
            self._wall_start = self._cpu_start = None

        def _resume(self):
            self._cpu_start = time.process_time()
            self._wall_start = time.perf_counter()

        def _pause(self):
            self._walls.append(time.perf_counter() - self._wall_start)
            self._cpus.append(time.process_time() - self._cpu_start)

        def on_epoch_begin(self, epoch, logs=None):
            self._walls, self._cpus = [], []
            self._resume()

        def on_train_batch_begin(self, batch, logs=None):
            if batch and batch % steps_per_turn == 0:
                self._pause()
                conn.send(("yield",))
                conn.recv()
                self._resume()

        def on_epoch_end(self, epoch, logs=None):
            self._pause()
            conn.send(("epoch", epoch, self._walls, self._cpus))
            conn.recv()

    return TurnTimer()


class WorkerFailed(RuntimeError):
    pass


class TokenRing:
    """Starts one process per configuration and passes the token among them.

    Args:
      target: A module-level function `target(name, settings, conn)`.
      names: Configuration names, in ring order.
      settings: A picklable dict handed to every worker.
    """

    def __init__(self, target, names, settings):
        context = multiprocessing.get_context("spawn")
        self.names = list(names)
        self.conns, self.processes = {}, {}
        for name in self.names:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=target, args=(name, settings, child_end), name=f"bench-{name}"
            )
            process.start()
            child_end.close()
            self.conns[name], self.processes[name] = parent_end, process

    def _receive(self, name):
        try:
            return self.conns[name].recv()
        except EOFError:
            raise WorkerFailed(
                f"worker '{name}' exited (code {self.processes[name].exitcode}) "
                "before finishing; its log is above."
            ) from None

    def wait_ready(self):
        """Blocks until every worker is set up; returns {name: info}."""
        infos = {}
        for name in self.names:
            message = self._receive(name)
            if message[0] != "ready":
                raise WorkerFailed(f"worker '{name}' sent {message!r} instead of 'ready'")
            infos[name] = message[1]
        return infos

    def run(self, on_epoch):
        """Passes the token round robin until every worker is done.

        The ring direction alternates every cycle (A B C D, D C B A, ...), so
        no configuration always follows the same one.

        Args:
          on_epoch: Called as `on_epoch(name, epoch, turn_walls, turn_cpus)` for
            each epoch: the wall-clock and CPU seconds of each of its turns.

        Returns:
          {name: info} from each worker's `"done"` message.
        """
        active, done, cycle = list(self.names), {}, 0
        while active:
            order = active if cycle % 2 == 0 else active[::-1]
            for name in list(order):
                self.conns[name].send("go")
                message = self._receive(name)
                if message[0] == "epoch":
                    on_epoch(name, *message[1:])
                elif message[0] == "done":
                    done[name] = message[1]
                    active.remove(name)
                    self.processes[name].join()
                elif message[0] != "yield":
                    raise WorkerFailed(f"worker '{name}' sent {message!r}")
            cycle += 1
        return done

    def close(self):
        """Ends any worker still running (only this ring's own processes)."""
        for name, process in self.processes.items():
            if process.is_alive():
                process.terminate()
                process.join(10)
            self.conns[name].close()


def summarize(values):
    """Median, min and max of a list of seconds."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }
