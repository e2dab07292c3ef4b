from proxy.embedded import main

raise SystemExit(main())
