"""KPI models of predictive routing: how a customer would fare with each agent."""
