"""From answers to a catalogue of named individuals (above :mod:`aas_core.annotate`).

- :func:`build_catalogue`: the store's answers folded into a clustering
  (:mod:`.evidence`: mixed clusters dissolved, NP3 along the kNN graph), as
  identities with stable numbers (``NY-0007``), the photos answers verified
  apart from those the clustering proposes, and names and checked marks
  that belong to photos;
- :func:`estimate_status`: photos wrongly grouped and merges still missing,
  with ranges, from check questions, and whether the embedding separates
  the animals at all;
- :class:`CatalogueProposer`: what to ask next (checks, split questions,
  the sampler's pairs);
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
    compare_auc,
    heldout_mask,
    learn,
    photo_files,
    switch_embeddings,
)
from .estimate import estimate_status
from .export import write_camtrap_media, write_contact_sheet, write_csv, write_folders
from .identities import (
    Catalogue,
    Identity,
    LiveCatalogue,
    StaleIdentity,
    build_catalogue,
    code_of,
    describe_change,
)
from .questions import CatalogueProposer
from .season import link_pairs

__all__ = [
    "Catalogue",
    "CatalogueProposer",
    "Identity",
    "LearnResult",
    "LiveCatalogue",
    "answer_auc",
    "build_catalogue",
    "code_of",
    "compare_auc",
    "describe_change",
    "estimate_status",
    "heldout_mask",
    "learn",
    "link_pairs",
    "photo_files",
    "switch_embeddings",
    "write_camtrap_media",
    "write_contact_sheet",
    "write_csv",
    "write_folders",
    "StaleIdentity",
]
