from bluegreen_dev.embedded import main

raise SystemExit(main())
