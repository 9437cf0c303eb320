"""KPI models of predictive routing: how a customer would fare with each agent.

A queue's model reads the features its layout names, in order:

>>> from opportune.ml.routing.features import RoutingSpec
>>> RoutingSpec("sales", "csat", ("age",), ()).customer_row({"age": 41.0, "other": 1.0})
[41.0]
"""
