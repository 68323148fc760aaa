"""Prompt sets written for the kit (see `mtp.suites`). Data only: importing builds plain lists."""
