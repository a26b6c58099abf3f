"""Datasets and their content-hashed versions, and which runs used which version."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from labrun.errors import Conflict, InvalidRequest, NotFound
from labrun.models import (
    NAME_PATTERN,
    CreateDataset,
    CreateDatasetVersion,
    DatasetList,
    DescribeDataset,
    DescribeDatasetVersion,
    LinkDataset,
)

from .database import Database
from .runs import RunStore
from .tables import Dataset, DatasetVersion, RunDataset


def _version(
    v: DatasetVersion, name: str, *, created: bool = False, runs=()
) -> DescribeDatasetVersion:
    return DescribeDatasetVersion(
        dataset=name,
        version=v.version,
        content_hash=v.content_hash,
        size=v.size,
        file_count=v.file_count,
        source_path=v.source_path,
        created_at=v.created_at,
        created=created,
        runs=list(runs),
    )


class DatasetStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _load(session: Session, name: str) -> Dataset:
        dataset = session.scalar(
            select(Dataset).where(Dataset.name == name).options(selectinload(Dataset.versions))
        )
        if dataset is None:
            raise NotFound(f"no dataset named {name!r}; `labrun datasets` lists them")
        return dataset

    @staticmethod
    def _describe(d: Dataset) -> DescribeDataset:
        return DescribeDataset(
            name=d.name,
            description=d.description,
            created_at=d.created_at,
            versions=[_version(v, d.name) for v in d.versions],
        )

    def create(self, req: CreateDataset) -> tuple[DescribeDataset, bool]:
        """Create the dataset, or return the existing one of that name (and False)."""
        with self.db.session() as session:
            existing = session.scalar(select(Dataset).where(Dataset.name == req.name))
            if existing is not None:
                return self._describe(self._load(session, req.name)), False
            dataset = Dataset(name=req.name, description=req.description)
            session.add(dataset)
            session.flush()
            return self._describe(self._load(session, req.name)), True

    def list_datasets(self) -> DatasetList:
        with self.db.session() as session:
            rows = session.scalars(
                select(Dataset).options(selectinload(Dataset.versions)).order_by(Dataset.name)
            ).all()
            return DatasetList(datasets=[self._describe(d) for d in rows])

    def get(self, name: str) -> DescribeDataset:
        """A dataset with every version and the runs that used each."""
        with self.db.session() as session:
            dataset = self._load(session, name)
            used: dict[int, list[int]] = {}
            for version_id, run_id in session.execute(
                select(RunDataset.dataset_version_id, RunDataset.run_id)
                .where(RunDataset.dataset_version_id.in_([v.id for v in dataset.versions]))
                .order_by(RunDataset.run_id)
            ):
                used.setdefault(version_id, []).append(run_id)
            described = self._describe(dataset)
            for version, row in zip(described.versions, dataset.versions, strict=True):
                version.runs = used.get(row.id, [])
            return described

    def add_version(self, name: str, req: CreateDatasetVersion) -> DescribeDatasetVersion:
        """Register content: the same hash is the same version, new content a new one."""
        with self.db.session() as session:
            dataset = session.scalar(select(Dataset).where(Dataset.name == name))
            if dataset is None:
                if re.fullmatch(NAME_PATTERN, name) is None:
                    raise InvalidRequest(
                        f"dataset name {name!r} must be letters, digits, '_', '.' or '-' "
                        "(up to 128, starting with a letter or digit)"
                    )
                dataset = Dataset(name=name, description="")
                session.add(dataset)
                session.flush()
            same = session.scalar(
                select(DatasetVersion).where(
                    DatasetVersion.dataset_id == dataset.id,
                    DatasetVersion.content_hash == req.content_hash,
                )
            )
            if req.version is not None and (same is None or same.version != req.version):
                found = f"version {same.version}" if same else "content no version has"
                raise Conflict(
                    f"dataset {name!r}: the data at {req.source_path or 'that path'} is {found}, "
                    f"not {req.version}; restore {req.version}'s files or drop --version"
                )
            if same is not None:
                return _version(same, name)
            count = session.scalar(
                select(func.count()).where(DatasetVersion.dataset_id == dataset.id)
            )
            version = DatasetVersion(
                dataset_id=dataset.id,
                version=f"v{(count or 0) + 1}",
                content_hash=req.content_hash,
                size=req.size,
                file_count=req.file_count,
                source_path=req.source_path,
                manifest=req.manifest,
            )
            session.add(version)
            session.flush()
            return _version(version, name, created=True)

    def get_version(self, name: str, version: str) -> DescribeDatasetVersion:
        with self.db.session() as session:
            row = self._find_version(session, name, version)
            runs = session.scalars(
                select(RunDataset.run_id)
                .where(RunDataset.dataset_version_id == row.id)
                .order_by(RunDataset.run_id)
            ).all()
            return _version(row, name, runs=runs)

    def _find_version(self, session: Session, name: str, version: str) -> DatasetVersion:
        dataset = self._load(session, name)
        for v in dataset.versions:
            if v.version == version:
                return v
        known = ", ".join(v.version for v in dataset.versions) or "none yet"
        raise NotFound(f"dataset {name!r} has no version {version!r} (it has: {known})")

    def link(self, run_id: int, req: LinkDataset) -> DescribeDatasetVersion:
        with self.db.session() as session:
            RunStore.load(session, run_id)
            row = self._find_version(session, req.dataset, req.version)
            session.merge(RunDataset(run_id=run_id, dataset_version_id=row.id, role=req.role))
            return _version(row, req.dataset)

    def of_run(self, run_id: int) -> list[tuple[str, DescribeDatasetVersion]]:
        with self.db.session() as session:
            RunStore.load(session, run_id)
            rows = session.execute(
                select(RunDataset.role, DatasetVersion, Dataset.name)
                .join(DatasetVersion, RunDataset.dataset_version_id == DatasetVersion.id)
                .join(Dataset, DatasetVersion.dataset_id == Dataset.id)
                .where(RunDataset.run_id == run_id)
                .order_by(Dataset.name)
            )
            return [(role, _version(v, name)) for role, v, name in rows]
