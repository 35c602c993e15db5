from sdc_runtime.main import main

main()
