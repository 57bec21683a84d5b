"""Code the tests share: live processes, a sink server, scripted connectors, senders."""
