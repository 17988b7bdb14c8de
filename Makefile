# The README's two commands.
.PHONY: up test
up:    ## Build and run the whole local stack (ephemeral Postgres, monolith, services, gateway)
	./scripts/stack.sh
test:  ## Run every test
	./scripts/test.sh
