"""The DuckLake warehouse: schema files, queries and the module that opens it."""

from warehouse.db import ALIAS, Warehouse, WarehouseError, load_query

__all__ = ["ALIAS", "Warehouse", "WarehouseError", "load_query"]
