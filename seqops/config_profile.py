"""The `profile:` section of params.yaml: per-user profiles and their segments (models/profiles.py,
models/segments.py, docs/profiles.md). Its own module because seqops/config.py is near its size limit;
`Params.profile` holds it."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from seqops.config_base import Section

SegmentMethod = Literal["kmeans", "hdbscan"]
SEGMENT_METHODS: tuple[str, ...] = get_args(SegmentMethod)
EmbeddingModel = Literal["champion", "candidate"]


class ProfileParams(Section):
    """Profiles (activity/RFM, session habits, category interests, the model's sequence embedding)
    and the clustering that segments them."""

    model: EmbeddingModel = Field(
        "champion",
        description="whose sequence embedding: the champion (the candidate while there is none) or the candidate",
    )
    method: SegmentMethod = Field(
        "kmeans", description="kmeans: k in [k_min, k_max] with the best silhouette | hdbscan: density-based"
    )
    k_min: int = Field(2, ge=2, description="kmeans: fewest segments tried")
    k_max: int = Field(8, ge=2, description="kmeans: most segments tried")
    silhouette_sample: int = Field(2000, ge=100, description="users the silhouette of each k is computed on")
    min_cluster_size: int = Field(25, ge=2, description="hdbscan: smallest segment (smaller groups are noise)")
    embedding_dims: int = Field(8, ge=0, description="principal components of the embedding clustered (0: not used)")
    top_categories: int = Field(5, ge=1, description="categories kept per profile, largest share first")
    max_fit_users: int = Field(50_000, gt=0, description="users the clustering is fitted on (the rest are assigned)")
    report_points: int = Field(3000, gt=0, description="most users drawn in the report's 2-D projection")
    seed: int = 0

    @model_validator(mode="after")
    def _k_range(self) -> "ProfileParams":
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be at least k_min ({self.k_min})")
        return self
