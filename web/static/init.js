// GOV.UK Frontend's behaviour for the components on the page; every page works without it.
import { initAll } from '/vendor/govuk/govuk-frontend.min.js'
initAll()
