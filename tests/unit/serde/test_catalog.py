from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.serde.catalog import Catalog, CatalogError, default_schema_dir
from pipeline.serde.errors import UnknownTopic

CONTRACT_TOPICS = {
    "user_registered": "shop.UserRegistered",
    "order_created": "shop.OrderCreated",
    "stock_adjusted": "shop.StockAdjusted",
    "user_order_stats": "shop.UserOrderStats",
    "stock_levels": "shop.StockLevel",
    "low_stock_alerts": "shop.LowStockAlert",
    "notifications": "shop.NotificationRequested",
    "user_points": "shop.UserPoints",
    "sku_sales_hourly": "shop.SkuSales",
}


def test_every_contract_topic_has_its_record_and_a_value_subject() -> None:
    catalog = Catalog.load()
    assert {entry.topic: entry.record_name for entry in catalog} == CONTRACT_TOPICS
    for entry in catalog:
        assert entry.subject == f"{entry.topic}-value"
        assert entry.parsed["name"] == entry.record_name


def test_every_field_is_documented_and_times_are_timestamp_millis() -> None:
    for entry in Catalog.load():
        for field in entry.schema["fields"]:
            assert field.get("doc"), f"{entry.record_name}.{field['name']} has no doc"
            if field["name"].endswith("_at") or field["name"] == "at":
                assert field["type"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_topic_prefix_renames_topics_and_subjects() -> None:
    catalog = Catalog.load(topic_prefix="t1-")
    entry = catalog["t1-order_created"]
    assert entry.subject == "t1-order_created-value"


def test_unknown_topic_names_the_mapping_file() -> None:
    with pytest.raises(UnknownTopic, match=r"subjects\.yaml"):
        Catalog.load()["orders"]


def test_a_bad_compatibility_level_is_refused_with_the_topic_named(tmp_path: Path) -> None:
    shutil.copytree(default_schema_dir(), tmp_path, dirs_exist_ok=True)
    mapping = tmp_path / "subjects.yaml"
    mapping.write_text(mapping.read_text().replace("BACKWARD_TRANSITIVE", "SIDEWAYS", 1))
    with pytest.raises(CatalogError, match=r"user_registered.*SIDEWAYS"):
        Catalog.load(tmp_path)


def test_an_invalid_schema_file_is_refused_with_its_path(tmp_path: Path) -> None:
    shutil.copytree(default_schema_dir(), tmp_path, dirs_exist_ok=True)
    path = tmp_path / "StockLevel.avsc"
    schema = json.loads(path.read_text())
    schema["fields"][0]["type"] = "strnig"
    path.write_text(json.dumps(schema))
    with pytest.raises(CatalogError, match=r"StockLevel\.avsc"):
        Catalog.load(tmp_path)
