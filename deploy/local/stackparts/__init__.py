"""hubstream's local stack, one module per part over one shared runner.

runner    Config (ports and state directory from hubstream/settings.py), StackError, running and
          spawning commands, pid and port helpers, Java, Maven, apt, archives, private files.
kafka     the broker, its TLS and SCRAM secrets, a standard-library Kafka wire client.
postgres  the project's own PostgreSQL cluster, its roles and passwords.
registry  Apicurio Registry, storing schemas in PostgreSQL.
keycloak  Keycloak and the realm the project declares (roles, authorities, users, OIDC client).
cli       the commands over the parts; deploy/local/stack.py runs cli.main.

Standard library only: it runs with the system python3 before any virtualenv exists.
"""
