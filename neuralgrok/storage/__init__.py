"""(package laid out by concept; see the next commits)"""
