"""Source readers: each turns one kind of source (VMX, OVF, disk files, vSphere) into h2k_planner.models.VM."""
