"""Short reference documents shared by the summarization and retrieval (RAG) prompts and used as
filler context for long-input length mixes. Invented facts, so answers must come from the text."""

PASSAGES: list[tuple[str, str]] = [
    ("Lake Varnholm", (
        "Lake Varnholm is a glacial lake in the northern uplands, about 14 kilometres long and at most 62 metres "
        "deep. It freezes over every winter, usually by the second week of December, and the ice breaks up in "
        "late April. The town of Ostrel on its southern shore was founded in 1732 as a timber port. Logs from "
        "the surrounding forests were floated across the lake to a sawmill that operated until 1961. Today the "
        "lake is known for its clear water, a population of arctic char, and an annual ice-swimming festival "
        "held on the first Saturday of February. A regional railway line reached Ostrel in 1894, and the old "
        "station building now houses a museum about the timber trade.")),
    ("The Meridian Bridge", (
        "The Meridian Bridge is a cable-stayed bridge that carries four lanes of traffic and a cycle path across "
        "the Sella estuary. Construction began in 2009 and the bridge opened to traffic in October 2014, eight "
        "months later than planned because of a dispute over the foundations of the western pylon. The main span "
        "is 480 metres long and the two pylons rise 152 metres above the water. The project cost 610 million "
        "euros, of which a third was paid by a regional development fund. About 38,000 vehicles cross the bridge "
        "each day. The cycle path is separated from traffic by a glass wind screen after cyclists complained "
        "about strong crosswinds during the first winter.")),
    ("Cobalt-blue glaze", (
        "Potters in the hill village of Tarsi have produced a distinctive cobalt-blue glaze since at least the "
        "fifteenth century. The colour comes from a cobalt ore that was once mined in a valley two days' walk to "
        "the east; when that mine closed in 1870 the potters switched to imported cobalt oxide. The glaze is "
        "applied in two coats and fired at about 1,250 degrees Celsius in wood-burning kilns. Each kiln firing "
        "takes roughly thirty hours, including the slow cooling. In 1998 the village formed a cooperative of "
        "eleven workshops, which now sells most of its work abroad. The cooperative runs a summer school where "
        "visitors learn to throw pots and mix glazes.")),
    ("Project Halcyon", (
        "Project Halcyon was a three-year study of sleep among night-shift nurses at four city hospitals. "
        "Researchers gave 212 volunteers wrist sensors that recorded movement and light exposure, and asked them "
        "to keep a daily diary. Nurses who worked more than three consecutive night shifts slept on average 5.1 "
        "hours per day, compared with 6.4 hours for those who worked at most two in a row. The study also found "
        "that blackout curtains added about 40 minutes of sleep after a night shift, while caffeine after 3 a.m. "
        "reduced it by about 25 minutes. The authors recommended limiting runs of night shifts to two and "
        "providing dark rest rooms. Two of the four hospitals changed their rosters after the results appeared.")),
    ("The Ferrow Valley orchards", (
        "The Ferrow Valley produces about a fifth of the country's apples. Most orchards are small family farms "
        "of between five and twenty hectares. The valley's main varieties are Red Ferrow, a crisp late apple "
        "picked in October, and Golden Drop, which ripens in early September. A late frost in May 2021 destroyed "
        "nearly half of that year's blossom, and many growers have since installed wind machines that mix warmer "
        "air from above into the orchards on cold nights. The local cooperative built a cold store in 2016 that "
        "keeps apples fresh until the following June. A cider festival in the town of Brill draws about 15,000 "
        "visitors every autumn.")),
    ("The Kessler telescope", (
        "The Kessler telescope is a 4.2-metre optical telescope on Mount Arrin, at an altitude of 2,870 metres. "
        "It saw first light in 1987 and was upgraded in 2012 with adaptive optics that correct for turbulence "
        "in the atmosphere about a thousand times per second. Astronomers use it mainly to study the atmospheres "
        "of planets around other stars. Observing time is divided by a committee twice a year; about one "
        "proposal in five is accepted. The telescope is closed every January for maintenance, when the mirror is "
        "re-coated with a thin layer of aluminium. A visitor centre at the foot of the mountain offers guided "
        "night tours in summer.")),
    ("The Orlan language", (
        "Orlan is a language spoken by about 90,000 people in the coastal districts of the Vey peninsula. It has "
        "five vowels and a system of noun classes that marks whether an object is alive, a place, or a tool. "
        "Verbs come at the end of the sentence. Orlan was mostly oral until 1923, when a teacher named Ilse "
        "Maran designed an alphabet based on Latin letters. Since 2005 it has been taught in primary schools of "
        "the peninsula, and a radio station broadcasts in Orlan for six hours every day. Linguists estimate that "
        "about a third of children in the region now grow up speaking Orlan at home, up from a tenth in 1990.")),
    ("Harbour water taxis", (
        "The harbour city of Nessa runs a fleet of 28 electric water taxis that link 17 piers. The service "
        "started in 2018 with diesel boats and switched to electric boats between 2020 and 2022. Each boat "
        "carries up to 24 passengers and charges its batteries for ten minutes at the end of every round trip. "
        "A single ticket costs 2.50, and the city's ordinary transport pass is also valid. Ridership rose from "
        "1.2 million trips in 2019 to 3.1 million in 2023. The busiest route connects the central station with "
        "the university campus on Kell Island. In storms with winds above 70 kilometres per hour the service is "
        "suspended and replacement buses run over the bridges.")),
]
