"""Importers: files of customers, orders, products and events into the customer hub."""
