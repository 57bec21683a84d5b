"""Operator actions: release, replay and cancel (`operations`), the same in the
background over many executions (`bulk`), and pruning old events (`retention`).
"""
