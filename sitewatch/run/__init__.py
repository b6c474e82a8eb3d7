"""The run loop: the supervisor and the producer and consumer processes it forks and restarts."""
