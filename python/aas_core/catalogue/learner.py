"""``aas catalogue --learn``: the catalogue learns from its answers while a person answers.

Every ``every`` new same/different answers, a background thread trains the
frozen-backbone head on the answers so far (:func:`.embedding.learn`: the
backbone's features are computed once and cached in the run folder, a
share of the answers is held out) and measures the new embedding and the
one in use on the held-out answers (AUC of "same" vs "different" by
cosine similarity). Only when the new one separates them better (by DeLong's
paired test at the one-sided 5% level, :func:`.embedding.compare_auc`) is it
written to the run folder and made the store's embedding
(:func:`.embedding.switch_embeddings`), the photos clustered again, and
the catalogue and the questions switched to it; otherwise nothing changes,
so learning never makes the catalogue worse by that measure. The rule is
``aas train``'s (:func:`.embedding.keep_decision`), except that with fewer than
10 held-out answers of either kind (no measure) the current embedding stays. Every attempt
is kept in :attr:`Learner.attempts` and shown on the page.

The first retraining also computes the backbone's features of every photo
(and its mirror): as long as embedding the photos took, once.
"""

from __future__ import annotations

import threading
import time

import numpy as np

__all__ = ["LEARN_EVERY", "Learner"]

LEARN_EVERY = 200  # new answers between retrainings (see benchmarks/README.md)


class Learner:
    """Retrains in the background and switches the catalogue to a better embedding.

    Parameters
    ----------
    run_dir : Path, the run folder (the feature cache and new embeddings go there)
    store : AnnotationStore (locked by this process)
    live : LiveCatalogue, switched with :meth:`LiveCatalogue.use`
    proposer : Proposer or None, the sampler's part, switched with its ``use``
    cluster : callable(X) -> ClusterState, the run's clustering of an embedding
    every : int >= 1, new answers between retrainings
    learn_args : dict, keyword arguments of :func:`.embedding.learn`
    log : callable(str) or None, one line per attempt
    """

    def __init__(
        self,
        run_dir,
        store,
        live,
        *,
        proposer,
        cluster,
        every=LEARN_EVERY,
        learn_args=None,
        log=None,
    ):
        self.run_dir, self.store, self.live = run_dir, store, live
        self.proposer, self.cluster = proposer, cluster
        self.every = int(every)
        self.learn_args = dict(learn_args or {})
        self.log = log
        self.attempts = []  # dicts: answers, auc, auc_current, kept, seconds, message
        self.error = ""
        self._lock = threading.Lock()
        self._thread = None
        self._answers_at_last = len(store.constraints())

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def answers_until_next(self) -> int:
        return max(0, self._answers_at_last + self.every - len(self.store.constraints()))

    def maybe_start(self) -> bool:
        """Starts a retraining in the background when ``every`` answers came since the last
        (never two at once); returns whether one started."""
        with self._lock:
            if self.running or self.answers_until_next() > 0:
                return False
            self._answers_at_last = len(self.store.constraints())
            self._thread = threading.Thread(target=self._run, name="aas-learn", daemon=True)
            self._thread.start()
            return True

    def run_now(self) -> dict:
        """One retraining in this thread (what the background thread does); its record."""
        self._answers_at_last = len(self.store.constraints())
        self._run()
        return self.attempts[-1] if self.attempts else {"error": self.error}

    def _run(self):
        from .embedding import learn, switch_embeddings

        t0 = time.perf_counter()
        try:
            current = self.live.clusters.X
            result = learn(self.run_dir, self.store, current=current, **self.learn_args)
            record = {
                "answers": int(len(self.store.constraints())),
                "auc": _finite(result.auc),
                "auc_current": _finite(result.auc_current),
                "heldout": result.n_heldout,
                "kept": bool(result.better),
                "seconds_training": round(result.seconds - result.seconds_features, 2),
                "seconds_features": round(result.seconds_features, 2),
            }
            if result.better:
                path = switch_embeddings(
                    self.store,
                    result.embeddings,
                    self.run_dir,
                    source="learned",
                    auc=result.auc,
                    detail={k: record[k] for k in ("answers", "auc", "auc_current", "heldout")},
                )
                clusters = self.cluster(result.embeddings)
                self.live.use(clusters)
                if self.proposer is not None:
                    self.proposer.use(clusters.X, clusters, store=self.store)
                record["path"] = str(path)
            record["seconds"] = round(time.perf_counter() - t0, 2)
            record["message"] = result.message + (
                "; the catalogue now uses it" if result.better else ""
            )
            self.error = ""
        except Exception as exc:  # the page shows it; answering goes on
            self.error = f"learning from the answers failed: {exc}"
            record = None
        if record is not None:
            self.attempts.append(record)
            if self.log is not None:
                self.log(f"learn: {record['message']}")
        elif self.log is not None:
            self.log(self.error)

    def state(self) -> dict:
        """For the page: the embedding in use, its held-out AUC, the attempts so far."""
        history = self.store.embeddings_history()
        now = history[-1] if history else {}
        return {
            "source": now.get("source", ""),
            "auc": now.get("auc"),
            "running": self.running,
            "next_in": self.answers_until_next(),
            "attempts": list(self.attempts),
            "error": self.error,
        }


def _finite(v):
    v = float(v)
    return round(v, 4) if np.isfinite(v) else None
