"""Datasets, projects and comparisons."""

from __future__ import annotations

from labrun.models import (
    CompareQuery,
    Comparison,
    CreateDataset,
    CreateDatasetVersion,
    DatasetList,
    DescribeDataset,
    DescribeDatasetVersion,
    ProjectList,
)

from .base import LabrunHandler, operation


class DatasetsHandler(LabrunHandler):
    @operation("List datasets with their versions", response=DatasetList)
    async def get(self) -> DatasetList:
        return await self.call(self.store.datasets.list_datasets)

    @operation(
        "Create a dataset (200 with the existing one when the name is taken)",
        body=CreateDataset,
        response=DescribeDataset,
        status=201,
        also=(200,),
        action="dataset.create",
    )
    async def post(self, body: CreateDataset) -> tuple[DescribeDataset, int]:
        dataset, created = await self.call(self.store.datasets.create, body)
        return dataset, 201 if created else 200


class DatasetHandler(LabrunHandler):
    @operation("Describe a dataset", response=DescribeDataset)
    async def get(self, name: str) -> DescribeDataset:
        return await self.call(self.store.datasets.get, name)


class DatasetVersionsHandler(LabrunHandler):
    @operation(
        "Register content: the same hash returns its version, new content makes one",
        body=CreateDatasetVersion,
        response=DescribeDatasetVersion,
        status=201,
        also=(200,),
        errors=(400, 403, 409),
        action="dataset.add_version",
    )
    async def post(
        self, name: str, body: CreateDatasetVersion
    ) -> tuple[DescribeDatasetVersion, int]:
        version = await self.call(self.store.datasets.add_version, name, body)
        return version, 201 if version.created else 200


class DatasetVersionHandler(LabrunHandler):
    @operation(
        "Describe a dataset version and the runs that used it", response=DescribeDatasetVersion
    )
    async def get(self, name: str, version: str) -> DescribeDatasetVersion:
        return await self.call(self.store.datasets.get_version, name, version)


class ProjectsHandler(LabrunHandler):
    @operation("List projects with their run counts", response=ProjectList)
    async def get(self) -> ProjectList:
        return await self.call(self.store.runs.projects)


class CompareHandler(LabrunHandler):
    @operation(
        "Compare runs: parameters and latest metrics side by side",
        query=CompareQuery,
        response=Comparison,
    )
    async def get(self, query: CompareQuery) -> Comparison:
        return await self.call(self.store.runs.compare, query.runs)
