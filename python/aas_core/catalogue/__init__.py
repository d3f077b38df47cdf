"""From answers to a catalogue of named individuals (above :mod:`aas_core.annotate`).

- :func:`build_catalogue`: the store's answers folded into a clustering
  (NP3), as identities with stable numbers (``NY-0007``), names and checked
  marks kept in the store;
- :func:`estimate_missed`: how many identities are probably still split in
  two, from the rate of "same" answers by similarity;
- :func:`link_pairs`: a new season's photos asked against the known
  identities first;
- :func:`learn`: a better embedding trained on the answers (a head on the
  frozen backbone), measured on held-out answers; :func:`switch_embeddings`
  makes one the run's embedding (:mod:`.embedding`);
- exports: :func:`write_csv`, :func:`write_folders`,
  :func:`write_camtrap_media`, :func:`write_contact_sheet`.
"""

from .embedding import (
    LearnResult,
    answer_auc,
    heldout_mask,
    learn,
    photo_files,
    switch_embeddings,
)
from .estimate import estimate_missed
from .export import write_camtrap_media, write_contact_sheet, write_csv, write_folders
from .identities import Catalogue, Identity, build_catalogue, code_of
from .season import link_pairs

__all__ = [
    "Catalogue",
    "Identity",
    "LearnResult",
    "answer_auc",
    "build_catalogue",
    "code_of",
    "estimate_missed",
    "heldout_mask",
    "learn",
    "link_pairs",
    "photo_files",
    "switch_embeddings",
    "write_camtrap_media",
    "write_contact_sheet",
    "write_csv",
    "write_folders",
]
