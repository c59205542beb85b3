from megatron_infi.demo.run import main

raise SystemExit(main())
