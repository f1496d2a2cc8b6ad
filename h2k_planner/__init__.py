"""Planner: reads sources into VM models and turns them into a Plan and Celery canvases. Pure."""
