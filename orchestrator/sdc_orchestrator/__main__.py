from sdc_orchestrator.main import main

main()
