"""Deployment on Flower's SuperLink / SuperNode: keys, certificates, server and client daemons."""
