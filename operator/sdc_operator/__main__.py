from sdc_operator.main import main

main()
